//! Walks the marked YAML tree: typed access to mappings, lists and scalars that records every
//! problem with its position and field path, so that the section parsers read top-down and a
//! file's errors are all reported together.

use std::path::Path;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};

use crate::error::{ConfigError, Problem};

/// Collects the problems found while walking one file.
#[derive(Debug)]
pub(crate) struct Walker<'a> {
    /// The file, for [`ConfigError::file`].
    file: &'a Path,
    /// Problems so far, in the order found.
    errors: Vec<ConfigError>,
}

/// A 1-based position in the file; `0:0` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column.
    pub(crate) column: usize,
}

/// A node and the field path that names it in errors.
#[derive(Debug, Clone)]
pub(crate) struct Field<'n> {
    /// The YAML node.
    pub(crate) node: &'n Node,
    /// Like `routes[2].to[0]`; empty for the document root.
    pub(crate) path: String,
}

/// One `key: value` of a mapping whose keys are data (policy names, rule keys) rather than
/// schema.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'n> {
    /// The key as written.
    pub(crate) key: &'n str,
    /// Where the key is written.
    pub(crate) key_pos: Pos,
    /// The value, named `parent.key`.
    pub(crate) value: Field<'n>,
}

/// A mapping whose keys have been checked against the schema.
#[derive(Debug, Clone)]
pub(crate) struct Map<'n> {
    /// The YAML mapping.
    node: &'n MarkedMappingNode,
    /// Field path of the mapping itself.
    path: String,
}

impl<'a> Walker<'a> {
    /// A walker for `file` with no problems yet.
    pub(crate) fn new(file: &'a Path) -> Self {
        Self {
            file,
            errors: Vec::new(),
        }
    }

    /// Records a problem at `pos` in `field`.
    pub(crate) fn report(&mut self, pos: Pos, field: &str, problem: impl Into<Problem>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            field: field.to_owned(),
            message: problem.into().to_string(),
        });
    }

    /// Records a problem with the value of `field`.
    pub(crate) fn report_at(&mut self, field: &Field<'_>, problem: impl Into<Problem>) {
        self.report(field.pos(), &field.path, problem);
    }

    /// The problems found, sorted by position (stable, so same-position problems keep their
    /// order).
    pub(crate) fn finish(self) -> Vec<ConfigError> {
        let mut errors = self.errors;
        errors.sort_by_key(|error| (error.line, error.column));
        errors
    }

    /// `field` as a mapping; every key not in `known` is reported at the key.
    pub(crate) fn mapping<'n>(&mut self, field: &Field<'n>, known: &[&str]) -> Option<Map<'n>> {
        let Node::Mapping(node) = field.node else {
            self.wrong_type(field, "a mapping");
            return None;
        };
        for key in node.keys() {
            if !known.contains(&key.as_str()) {
                let problem = Problem::UnknownField {
                    key: key.as_str().to_owned(),
                    expected: known.join(", "),
                };
                self.report(Pos::of(key.span()), &join(&field.path, key), problem);
            }
        }
        Some(Map {
            node,
            path: field.path.clone(),
        })
    }

    /// `field` as a mapping whose keys are data, not schema: every entry, in file order.
    /// `expected` describes the mapping in a wrong-type error.
    pub(crate) fn entries<'n>(
        &mut self,
        field: &Field<'n>,
        expected: &'static str,
    ) -> Option<Vec<Entry<'n>>> {
        let Node::Mapping(node) = field.node else {
            self.wrong_type(field, expected);
            return None;
        };
        Some(
            node.iter()
                .map(|(key, value)| Entry {
                    key: key.as_str(),
                    key_pos: Pos::of(key.span()),
                    value: Field {
                        node: value,
                        path: join(&field.path, key),
                    },
                })
                .collect(),
        )
    }

    /// The value of `key`; a missing key is reported at the mapping, a null value at the key.
    pub(crate) fn required<'n>(&mut self, map: &Map<'n>, key: &str) -> Option<Field<'n>> {
        let path = join(&map.path, key);
        match map.node.get_node(key) {
            None => {
                self.report(map.pos(), &path, Problem::Missing(key.to_owned()));
                None
            }
            Some(node) if is_null(node) => {
                let pos = map.key_pos(key).unwrap_or_else(|| Pos::of(node.span()));
                self.report(pos, &path, Problem::Null);
                None
            }
            Some(node) => Some(Field { node, path }),
        }
    }

    /// `field` as a list, each element named `path[index]`.
    pub(crate) fn list<'n>(&mut self, field: &Field<'n>) -> Option<Vec<Field<'n>>> {
        let Node::Sequence(items) = field.node else {
            self.wrong_type(field, "a list");
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(index, node)| Field {
                    node,
                    path: format!("{}[{index}]", field.path),
                })
                .collect(),
        )
    }

    /// `field` as a list with at least one element.
    pub(crate) fn non_empty_list<'n>(&mut self, field: &Field<'n>) -> Option<Vec<Field<'n>>> {
        let items = self.list(field)?;
        if items.is_empty() {
            self.report_at(field, Problem::EmptyList);
            return None;
        }
        Some(items)
    }

    /// `field` as text. Any scalar is text: `client_id: 1234` is the string `1234`.
    pub(crate) fn string<'n>(&mut self, field: &Field<'n>) -> Option<&'n str> {
        match field.node {
            Node::Scalar(scalar) => Some(scalar.as_str()),
            _ => {
                self.wrong_type(field, "a string");
                None
            }
        }
    }

    /// `field` as an unquoted `true` or `false`.
    pub(crate) fn bool(&mut self, field: &Field<'_>) -> Option<bool> {
        let value = match field.node {
            Node::Scalar(scalar) => scalar.as_bool(),
            _ => None,
        };
        if value.is_none() {
            self.wrong_type(field, "`true` or `false`");
        }
        value
    }

    /// `field` as text, parsed by `parse`; a parse failure is reported at the value.
    pub(crate) fn value<T, E: Into<Problem>>(
        &mut self,
        field: &Field<'_>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let text = self.string(field)?;
        match parse(text) {
            Ok(value) => Some(value),
            Err(error) => {
                self.report_at(field, error);
                None
            }
        }
    }

    /// Reports that `field` is not `expected`.
    fn wrong_type(&mut self, field: &Field<'_>, expected: &'static str) {
        let problem = Problem::WrongType {
            expected,
            found: kind(field.node),
        };
        self.report_at(field, problem);
    }
}

impl Pos {
    /// Where `span` starts.
    pub(crate) fn of(span: &Span) -> Self {
        span.start()
            .map_or(Self { line: 0, column: 0 }, |mark| Self {
                line: mark.line(),
                column: mark.column(),
            })
    }
}

impl<'n> Field<'n> {
    /// The document root.
    pub(crate) fn root(node: &'n Node) -> Self {
        Self {
            node,
            path: String::new(),
        }
    }

    /// Where the value starts.
    pub(crate) fn pos(&self) -> Pos {
        Pos::of(self.node.span())
    }

    /// Whether the value is YAML null (`~`, `null` or nothing).
    pub(crate) fn is_null(&self) -> bool {
        is_null(self.node)
    }

    /// The value of `key` when this is a mapping that has it (not null); nothing is reported.
    /// For cross-section checks that must not depend on whether the section parsed.
    pub(crate) fn peek(&self, key: &str) -> Option<Field<'n>> {
        let Node::Mapping(node) = self.node else {
            return None;
        };
        let child = node.get_node(key).filter(|child| !is_null(child))?;
        Some(Field {
            node: child,
            path: join(&self.path, key),
        })
    }
}

impl<'n> Map<'n> {
    /// Where the mapping starts: its `{` or its first key. (The parser marks a block mapping's
    /// start after its first key, which reads oddly in an error.)
    pub(crate) fn pos(&self) -> Pos {
        let span = Pos::of(self.node.span());
        let first_key = self.node.keys().next().map(|key| Pos::of(key.span()));
        match first_key {
            Some(key) if key.line > 0 && (key.line, key.column) < (span.line, span.column) => key,
            _ => span,
        }
    }

    /// The value of `key`, unless it is absent or null.
    pub(crate) fn get(&self, key: &str) -> Option<Field<'n>> {
        let node = self.node.get_node(key)?;
        if is_null(node) {
            return None;
        }
        Some(Field {
            node,
            path: join(&self.path, key),
        })
    }

    /// Where `key` is written, if it is.
    pub(crate) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.node
            .keys()
            .find(|candidate| candidate.as_str() == key)
            .map(|candidate| Pos::of(candidate.span()))
    }

    /// Whether `key` is written, whatever its value.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.node.get_node(key).is_some()
    }

    /// Whether the mapping has no keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.node.is_empty()
    }

    /// Whether every key written is one of `known` (unknown keys have been reported by
    /// [`Walker::mapping`]; a check that would only repeat them can look here first).
    pub(crate) fn only(&self, known: &[&str]) -> bool {
        self.node.keys().all(|key| known.contains(&key.as_str()))
    }
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether a node is YAML null: an unquoted empty value, `~` or `null`.
fn is_null(node: &Node) -> bool {
    matches!(node, Node::Scalar(scalar) if is_null_scalar(scalar))
}

/// Whether a scalar is YAML null.
fn is_null_scalar(scalar: &MarkedScalarNode) -> bool {
    scalar.may_coerce() && matches!(scalar.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// How a node is described in a wrong-type error.
fn kind(node: &Node) -> &'static str {
    match node {
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
        Node::Scalar(scalar) if is_null_scalar(scalar) => "nothing (null)",
        Node::Scalar(scalar) if scalar.as_bool().is_some() => "a boolean",
        Node::Scalar(scalar) if scalar.as_f64().is_some() => "a number",
        Node::Scalar(_) => "a string",
    }
}
