//! Back-channel logout, the provider's side (OpenID Connect Back-Channel Logout 1.0, §2.4 and
//! §2.5): when a sign-in ends, a logout token signed with the provider's key (`typ:
//! logout+jwt`; `iss`, `aud` = the client, `iat`, `exp` two minutes on, `jti`, `events`,
//! `sub`, and `sid` unless the client registered `backchannel_logout_session_required: false`)
//! is POSTed to every client that received tokens during that sign-in and registered a
//! `backchannel_logout_uri`. Delivery runs on a task of its own — the user's logout never waits
//! for it — with each attempt limited to five seconds, and up to three retries with backoff
//! when the client cannot be reached or answers 5xx or 429; each outcome is logged and reported
//! (as a [`Delivery`]) for the audit log.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::IdentityProvider;
use super::store::EndedSignIn;
use crate::oidc::BACKCHANNEL_EVENT;

/// How long a logout token is valid.
const TOKEN_LIFETIME: u64 = 120;
/// Time allowed for one delivery attempt.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per delivery (the first and three retries).
const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled for each further one (1 s, 2 s, 4 s).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The outcome of one back-channel logout delivery, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The client notified.
    pub client_id: String,
    /// Where the token was posted.
    pub uri: String,
    /// The user whose sign-in ended.
    pub username: Option<String>,
    /// The ended sign-in's `sid`.
    pub sid: String,
    /// The token's `jti`.
    pub jti: String,
    /// Attempts made.
    pub attempts: u32,
    /// What happened.
    pub outcome: DeliveryOutcome,
    /// Unix seconds when the delivery finished.
    pub time: u64,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The client answered 200 or 204.
    Delivered(u16),
    /// The client refused the token (another 4xx, or a redirect): not retried.
    Refused(u16),
    /// Every attempt failed (unreachable, timed out, 5xx, 429); the last cause.
    GaveUp(String),
}

impl Delivery {
    /// Whether the client confirmed the logout.
    pub fn delivered(&self) -> bool {
        matches!(self.outcome, DeliveryOutcome::Delivered(_))
    }

    /// One line for the audit record and the log; strings from the configuration are quoted.
    pub fn describe(&self) -> String {
        let outcome = match &self.outcome {
            DeliveryOutcome::Delivered(status) => format!("delivered (HTTP {status})"),
            DeliveryOutcome::Refused(status) => format!("refused by the client (HTTP {status})"),
            DeliveryOutcome::GaveUp(cause) => format!("not delivered: {cause}"),
        };
        format!(
            "back-channel logout of sign-in {:?} to client {:?} at {:?} (logout token {:?}): {outcome} after {} attempt{}",
            self.sid,
            self.client_id,
            self.uri,
            self.jti,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

/// Logs a [`Delivery`] (the default sink, when nothing else reports them).
pub fn log_delivery(delivery: &Delivery) {
    if delivery.delivered() {
        tracing::info!(client_id = ?delivery.client_id, jti = ?delivery.jti, attempts = delivery.attempts, "identity provider: back-channel logout delivered");
    } else {
        tracing::warn!(detail = %delivery.describe(), "identity provider: back-channel logout not delivered");
    }
}

/// One logout token to post.
struct Notice {
    client_id: String,
    uri: url::Url,
    jti: String,
    token: String,
}

impl IdentityProvider {
    /// Sends the back-channel logout of the sign-in that `ended` describes to its clients that
    /// registered a URI, in the background.
    pub(super) fn notify_logout(&self, ended: Option<EndedSignIn>, now: u64) {
        let Some(ended) = ended else {
            return;
        };
        let directory = self.directory();
        let mut notices = Vec::new();
        for client in ended.clients.iter().filter_map(|id| directory.client(id)) {
            let Some(uri) = &client.backchannel_logout_uri else {
                continue;
            };
            let Some(jti) = super::random_token(16) else {
                tracing::error!(
                    "identity provider: random source failed; back-channel logout not sent"
                );
                continue;
            };
            let mut claims = serde_json::Map::new();
            claims.insert("iss".into(), json!(self.issuer));
            claims.insert("aud".into(), json!(client.client_id));
            claims.insert("iat".into(), json!(now));
            claims.insert("exp".into(), json!(now.saturating_add(TOKEN_LIFETIME)));
            claims.insert("jti".into(), json!(jti));
            claims.insert("events".into(), json!({ BACKCHANNEL_EVENT: {} }));
            if let Some(username) = &ended.username {
                claims.insert("sub".into(), json!(username));
            }
            if client.backchannel_logout_session_required || ended.username.is_none() {
                claims.insert("sid".into(), json!(ended.sid));
            }
            match self
                .keys
                .sign("logout+jwt", &serde_json::Value::Object(claims))
            {
                Ok(token) => notices.push(Notice {
                    client_id: client.client_id.clone(),
                    uri: uri.clone(),
                    jti,
                    token,
                }),
                Err(e) => {
                    tracing::error!(error = %e, client_id = ?client.client_id, "identity provider: back-channel logout token not signed");
                }
            }
        }
        if notices.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("identity provider: no runtime to send back-channel logouts on");
            return;
        };
        let http = self.http.clone();
        let on_delivery = self.on_delivery.clone();
        let (sid, username) = (ended.sid, ended.username);
        for notice in notices {
            let (http, on_delivery) = (http.clone(), on_delivery.clone());
            let (sid, username) = (sid.clone(), username.clone());
            runtime.spawn(async move {
                let (attempts, outcome) =
                    deliver(&http, &notice.uri, &notice.token, FIRST_BACKOFF).await;
                on_delivery(Delivery {
                    client_id: notice.client_id,
                    uri: notice.uri.to_string(),
                    username,
                    sid,
                    jti: notice.jti,
                    attempts,
                    outcome,
                    time: crate::session::unix_now(),
                });
            });
        }
    }
}

/// Posts `token` to `uri` until the client confirms or refuses it, or the attempts run out;
/// `backoff` is the wait before the first retry, doubled for each further one.
async fn deliver(
    http: &reqwest::Client,
    uri: &url::Url,
    token: &str,
    mut backoff: Duration,
) -> (u32, DeliveryOutcome) {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(uri.clone())
            .form(&[("logout_token", token)])
            .timeout(ATTEMPT_TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                match status.as_u16() {
                    200 | 204 => return (attempt, DeliveryOutcome::Delivered(status.as_u16())),
                    429 | 500..=599 => last = format!("the client answered HTTP {status}"),
                    other => return (attempt, DeliveryOutcome::Refused(other)),
                }
            }
            Err(e) if e.is_timeout() => {
                last = format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs());
            }
            Err(e) => last = crate::oidc::error_chain(&e),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    (ATTEMPTS, DeliveryOutcome::GaveUp(last))
}

/// The sink for deliveries when nothing else was given: the log.
pub(super) fn default_sink() -> Arc<dyn Fn(Delivery) + Send + Sync> {
    Arc::new(|delivery: Delivery| log_delivery(&delivery))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// A tiny HTTP server on 127.0.0.1:0 that answers each request with the next status of
    /// `statuses` and reports each request's body.
    async fn server(
        statuses: Vec<u16>,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for status in statuses {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head and the declared body.
                loop {
                    let Ok(n) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(buffer.get(..n).unwrap_or_default());
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            let _ = tx.send(text.get(end + 4..).unwrap_or_default().to_owned());
                            break;
                        }
                    }
                }
                let reason = if status == 200 { "OK" } else { "X" };
                let answer = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (addr, rx)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const QUICK: Duration = Duration::from_millis(5);

    #[tokio::test]
    async fn a_failing_client_is_retried_with_backoff_and_a_refusal_is_final() {
        let (addr, mut bodies) = server(vec![503, 500, 200]).await;
        let uri = url::Url::parse(&format!("http://{addr}/bcl")).unwrap_or_else(|e| panic!("{e}"));
        let (attempts, outcome) = deliver(&client(), &uri, "tok.en.x", QUICK).await;
        assert_eq!((attempts, outcome), (3, DeliveryOutcome::Delivered(200)));
        for _ in 0..3 {
            assert_eq!(
                bodies.recv().await.as_deref(),
                Some("logout_token=tok.en.x"),
                "the token is posted as a form"
            );
        }
        let (addr, _bodies) = server(vec![400]).await;
        let uri = url::Url::parse(&format!("http://{addr}/bcl")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            deliver(&client(), &uri, "t", QUICK).await,
            (1, DeliveryOutcome::Refused(400))
        );
        let (addr, _bodies) = server(vec![503; 4]).await;
        let uri = url::Url::parse(&format!("http://{addr}/bcl")).unwrap_or_else(|e| panic!("{e}"));
        let (attempts, outcome) = deliver(&client(), &uri, "t", QUICK).await;
        assert_eq!(attempts, ATTEMPTS);
        assert!(
            matches!(&outcome, DeliveryOutcome::GaveUp(cause) if cause.contains("503")),
            "{outcome:?}"
        );
    }

    #[test]
    fn deliveries_are_described_on_one_line() {
        let delivery = Delivery {
            client_id: "rp\nforged".into(),
            uri: "https://rp.example.com/bcl".into(),
            username: Some("alice".into()),
            sid: "s".into(),
            jti: "j".into(),
            attempts: 1,
            outcome: DeliveryOutcome::Delivered(200),
            time: 0,
        };
        assert!(delivery.delivered());
        let line = delivery.describe();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.contains("delivered (HTTP 200) after 1 attempt"),
            "{line}"
        );
    }
}
