//! The `shared_state` section.

use super::Parser;
use crate::model::{Redis, RedisTls, SecretString, SharedState};
use crate::value::{self, ValueError};
use crate::walk::Field;

/// Keys of `shared_state`.
const SHARED_STATE: &[&str] = &["redis"];
/// Keys of `shared_state.redis`.
const REDIS: &[&str] = &["url", "tls", "username", "password", "key_prefix"];
/// Keys of `shared_state.redis.tls`.
const REDIS_TLS: &[&str] = &["ca_file"];

impl Parser<'_> {
    /// `shared_state`.
    pub(super) fn shared_state(&mut self, field: &Field<'_>) -> Option<SharedState> {
        let map = self.walk.mapping(field, SHARED_STATE)?;
        let redis = self
            .walk
            .required(&map, "redis")
            .and_then(|f| self.redis(&f));
        Some(SharedState { redis: redis? })
    }

    /// `shared_state.redis`.
    fn redis(&mut self, field: &Field<'_>) -> Option<Redis> {
        let map = self.walk.mapping(field, REDIS)?;
        let url_field = self.walk.required(&map, "url");
        let url = url_field
            .as_ref()
            .and_then(|f| self.walk.value(f, value::redis_url));
        let tls = self.optional(&map, "tls", |p, f| {
            let tls = p.walk.mapping(f, REDIS_TLS)?;
            let ca = p.optional(&tls, "ca_file", Self::ca_bundle)?;
            Some(RedisTls { ca })
        });
        let username = self.optional(&map, "username", |p, f| {
            p.walk.value(f, |text| {
                let name = text.trim();
                if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    Err(ValueError::RedisUsername)
                } else {
                    Ok(name.to_owned())
                }
            })
        });
        let password = self.optional(&map, "password", |p, f| p.secret(f).map(SecretString::new));
        let key_prefix = self.or_default(
            &map,
            "key_prefix",
            |p, f| {
                p.walk.value(f, |text| {
                    if text.is_empty()
                        || text.len() > 64
                        || text.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        Err(ValueError::RedisKeyPrefix(text.to_owned()))
                    } else {
                        Ok(text.to_owned())
                    }
                })
            },
            || "sekisho:".to_owned(),
        );
        let (address, database, wants_tls) = url?;
        let tls = tls?;
        let tls = match (wants_tls, tls) {
            (true, tls) => Some(tls.unwrap_or(RedisTls { ca: None })),
            (false, None) => None,
            (false, Some(_)) => {
                if let Some(f) = &url_field {
                    self.walk.report_at(f, ValueError::RedisTlsWithoutRediss);
                }
                return None;
            }
        };
        Some(Redis {
            address,
            database,
            tls,
            username: username?,
            password: password?,
            key_prefix: key_prefix?,
        })
    }
}

#[cfg(test)]
mod tests;
