//! Forward-auth (`/.sekisho/auth`) behind real front proxies: Debian's nginx (`auth_request`)
//! and Debian's Caddy (`forward_auth`), started by the test on free ports, with the real
//! OpenID provider, the echo upstream behind the front proxy, and Chromium for the sign-in.
//! The configurations are the ones README.md shows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests panic with context"
)]

use sekisho_tests::caddy::Caddy;
use sekisho_tests::echo::{Echo, Echoed};
use sekisho_tests::{
    CLIENT_SECRET, Idp, Nginx, Proxy, audit_records, eventually, regex_escape, run_browser, stack,
};
use serde_json::{Value, json};

/// The host the front proxies serve (Chromium resolves `*.localhost` to loopback itself).
const HOST: &str = "app.localhost";

/// Routes: the app behind the front proxy is decided by sekisho but reached only through the
/// front proxy (forward-auth-only routes, no `to`); `/admin` is for admins. nginx reaches
/// sekisho from 127.0.0.2, the only trusted proxy, so the test's own requests (from 127.0.0.1)
/// are not believed.
fn routes() -> String {
    format!(
        "  - id: app\n    from: http://127.0.0.1\n    to: http://{{echo}}\n\
         \x20 - id: fa-admin\n    from: http://{HOST}\n    path: {{prefix: /admin}}\n    \
         policy:\n      allow:\n        and:\n          - groups: {{has: admins}}\n\
         \x20 - id: fa-app\n    from: http://{HOST}\n"
    )
}

/// The nginx `server` body of README.md, for sekisho at `sekisho` and the app at `app`.
fn nginx_site(sekisho: &str, app: &str) -> String {
    format!(
        r#"
    location / {{
      auth_request /.sekisho-auth;
      auth_request_set $sekisho_user $upstream_http_x_sekisho_user;
      auth_request_set $sekisho_email $upstream_http_x_sekisho_email;
      auth_request_set $sekisho_groups $upstream_http_x_sekisho_groups;
      auth_request_set $sekisho_assertion $upstream_http_x_sekisho_jwt_assertion;
      auth_request_set $sekisho_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $sekisho_cookie;
      error_page 401 = @sekisho_login;
      proxy_set_header X-Sekisho-User $sekisho_user;
      proxy_set_header X-Sekisho-Email $sekisho_email;
      proxy_set_header X-Sekisho-Groups $sekisho_groups;
      proxy_set_header X-Sekisho-Jwt-Assertion $sekisho_assertion;
      proxy_pass http://{app};
    }}
    location = /.sekisho-auth {{
      internal;
      proxy_pass http://{sekisho}/.sekisho/auth;
      proxy_bind 127.0.0.2;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
    location = /.sekisho/auth {{
      return 404;
    }}
    location /.sekisho/ {{
      proxy_pass http://{sekisho};
      proxy_bind 127.0.0.2;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
    location @sekisho_login {{
      return 302 /.sekisho/login?rd=$request_uri;
    }}
"#
    )
}

/// The Caddy site body of README.md. `route` keeps the written order: the client's identity
/// headers are deleted before `forward_auth` copies sekisho's.
fn caddy_site(sekisho: &str, app: &str) -> String {
    format!(
        r#"
  route {{
    request_header -X-Sekisho-User
    request_header -X-Sekisho-Email
    request_header -X-Sekisho-Groups
    request_header -X-Sekisho-Jwt-Assertion
    respond /.sekisho/auth 404
    reverse_proxy /.sekisho/* {sekisho}
    forward_auth {sekisho} {{
      uri /.sekisho/auth
      copy_headers X-Sekisho-User X-Sekisho-Email X-Sekisho-Groups X-Sekisho-Jwt-Assertion
    }}
    reverse_proxy {app}
  }}
"#
    )
}

async fn nginx_stack() -> (Idp, Echo, Proxy, Nginx, String) {
    let (idp, echo, proxy) = stack(Default::default(), "ES256", |o| {
        o.server_yaml = "  trusted_proxies: [127.0.0.2]\n".to_owned();
        o.routes_yaml = routes();
    })
    .await;
    let nginx = Nginx::start(&nginx_site(&proxy.http.to_string(), &echo.addr.to_string())).await;
    let origin = format!("http://{HOST}:{}", nginx.addr.port());
    register(&idp, &proxy, &origin).await;
    (idp, echo, proxy, nginx, origin)
}

async fn caddy_stack() -> (Idp, Echo, Proxy, Caddy, String) {
    let (idp, echo, proxy) = stack(Default::default(), "ES256", |o| {
        o.server_yaml = "  trusted_proxies: [127.0.0.1]\n".to_owned();
        o.routes_yaml = routes();
    })
    .await;
    let caddy = Caddy::start(
        HOST,
        &caddy_site(&proxy.http.to_string(), &echo.addr.to_string()),
    )
    .await;
    let origin = format!("http://{HOST}:{}", caddy.addr.port());
    register(&idp, &proxy, &origin).await;
    (idp, echo, proxy, caddy, origin)
}

/// The provider accepts callbacks on the front proxy's origin too.
async fn register(idp: &Idp, proxy: &Proxy, front: &str) {
    let mut origins = proxy.origins();
    origins.push(front.to_owned());
    idp.register_client("sekisho", CLIENT_SECRET, &origins, "ES256")
        .await;
}

/// A client for the front proxy: `app.localhost` resolved to loopback, redirects not followed.
fn client(front_port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(HOST, ([127, 0, 0, 1], front_port).into())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Chromium signs in as `user` through the front proxy starting at `origin` + `path`, and
/// dumps the page it lands on as `page`.
async fn browse_as(idp: &Idp, origin: &str, user: &str, path: &str) -> Value {
    let steps = vec![
        json!({"goto": format!("{origin}{path}")}),
        json!({"wait_url": format!("^{}/interaction/", regex_escape(&idp.issuer))}),
        json!({"expect_text": "Sign in"}),
        json!({"fill": "input[name=login]", "value": user}),
        json!({"fill": "input[name=password]", "value": format!("{user}-pw")}),
        json!({"click": "#submit"}),
        json!({"wait_url": format!("^{}{}", regex_escape(origin), regex_escape(path))}),
        json!({"dump": "page"}),
    ];
    let result = run_browser(&json!({ "steps": steps })).await;
    assert_eq!(result["ok"], true, "browser run failed: {result}");
    result["dumps"]["page"].clone()
}

fn echoed_from_page(dump: &Value) -> Echoed {
    let body = dump["body"].as_str().unwrap_or_default();
    let (Some(start), Some(end)) = (body.find('{'), body.rfind('}')) else {
        panic!("no JSON on the page {}: {body}", dump["url"]);
    };
    Echoed(serde_json::from_str(&body[start..=end]).unwrap())
}

/// What every front proxy must get right, with programs (bearer tokens): identity passed,
/// forged identity headers replaced, `/admin` for admins only, nothing for the unsigned.
async fn programs_through(idp: &Idp, echo: &Echo, front_port: u16, origin: &str) {
    let http = client(front_port);
    let alice = idp.bearer("alice").await;
    let bob = idp.bearer("bob").await;

    let response = http
        .get(format!("{origin}/hello"))
        .bearer_auth(&alice)
        .header("x-sekisho-user", "mallory")
        .header("x-sekisho-groups", "admins")
        .header("x-sekisho-email", "mallory@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed = Echoed(response.json().await.unwrap());
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        echoed.header("x-sekisho-email").as_deref(),
        Some("alice@example.com")
    );
    assert!(
        echoed
            .header("x-sekisho-jwt-assertion")
            .is_some_and(|a| a.split('.').count() == 3),
        "the assertion is passed on: {:?}",
        echoed.header_names()
    );

    // bob's provider does not vouch for his address: sekisho sends an empty email header, and
    // the client's forged one must not get through either.
    let response = http
        .get(format!("{origin}/hello"))
        .bearer_auth(&bob)
        .header("x-sekisho-user", "alice")
        .header("x-sekisho-email", "alice@example.com")
        .header("x-sekisho-groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed = Echoed(response.json().await.unwrap());
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("bob"));
    assert_eq!(echoed.header("x-sekisho-groups").as_deref(), Some("sales"));
    assert_eq!(
        echoed.header("x-sekisho-email").filter(|e| !e.is_empty()),
        None,
        "a forged email header reached the upstream"
    );

    let hits = echo.hits();
    let denied = http
        .get(format!("{origin}/admin/users"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let allowed = http
        .get(format!("{origin}/admin/users"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(echo.hits(), hits + 1, "only alice's /admin request arrived");

    // A path trick into /admin is decided as /admin.
    let tricked = http
        .get(format!("{origin}/hello/../admin/users"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert!(
        tricked.status() == 403 || tricked.status() == 400,
        "bob reached /admin by a dot segment: {}",
        tricked.status()
    );
    assert_eq!(echo.hits(), hits + 1);

    // Clients cannot ask sekisho themselves through the front proxy (an answer carries a
    // signed assertion meant only for the upstream).
    let asked = http
        .get(format!("{origin}/.sekisho/auth"))
        .bearer_auth(&alice)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 404);
    assert!(asked.headers().get("x-sekisho-jwt-assertion").is_none());

    let anonymous = http.get(format!("{origin}/hello")).send().await.unwrap();
    assert!(
        anonymous.status() == 401 || anonymous.status().is_redirection(),
        "{}",
        anonymous.status()
    );
    assert_eq!(echo.hits(), hits + 1, "nothing unauthenticated arrived");
}

#[tokio::test]
async fn nginx_auth_request_signs_in_chromium_and_enforces_policies() {
    let (idp, echo, proxy, nginx, origin) = nginx_stack().await;
    programs_through(&idp, &echo, nginx.addr.port(), &origin).await;

    // nginx understands only 401 from auth_request: programs and browsers alike are sent to
    // /.sekisho/login by its error_page.
    let anonymous = client(nginx.addr.port())
        .get(format!("{origin}/hello?x=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 302);
    assert_eq!(
        anonymous.headers()["location"].to_str().unwrap(),
        format!("{origin}/.sekisho/login?rd=/hello?x=1")
    );

    let page = browse_as(&idp, &origin, "alice", "/hello").await;
    assert_eq!(page["status"], 200, "{page}");
    let echoed = echoed_from_page(&page);
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    assert_eq!(
        echoed.header("x-sekisho-groups").as_deref(),
        Some("eng,admins")
    );

    let page = browse_as(&idp, &origin, "bob", "/admin/").await;
    assert_eq!(page["status"], 403, "bob on /admin: {page}");

    // Every decision is a record naming the door, the original request and the front proxy.
    let audit = proxy.audit_dir();
    eventually("forward-auth records", || {
        let audit = audit.clone();
        async move {
            audit_records(&audit).iter().any(|r| {
                r["unmapped"]["door"] == "forward-auth"
                    && r["unmapped"]["route"] == "fa-admin"
                    && r["unmapped"]["decision"] == "deny"
                    && r["actor"]["user"]["uid"] == "bob"
                    && r["http_request"]["url"]["path"] == "/admin/"
                    && r["src_endpoint"]["intermediate_ips"][0] == "127.0.0.2"
            })
        }
    })
    .await;
}

#[tokio::test]
async fn caddy_forward_auth_signs_in_chromium_and_enforces_policies() {
    let (idp, echo, _proxy, caddy, origin) = caddy_stack().await;
    programs_through(&idp, &echo, caddy.addr.port(), &origin).await;

    // Browsers behind Caddy get sekisho's login redirect, which Caddy passes on.
    let anonymous = client(caddy.addr.port())
        .get(format!("{origin}/hello"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 302, "{}", caddy.log());
    let location = anonymous.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&idp.issuer), "{location}");
    assert!(
        location.contains(&format!(
            "redirect_uri={}",
            url_encode(&format!("{origin}/.sekisho/callback"))
        )),
        "the callback is on the front proxy's origin: {location}"
    );

    let page = browse_as(&idp, &origin, "alice", "/hello").await;
    assert_eq!(page["status"], 200, "{page}");
    let echoed = echoed_from_page(&page);
    assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));

    let page = browse_as(&idp, &origin, "bob", "/admin/").await;
    assert_eq!(page["status"], 403, "bob on /admin: {page}");
}

#[tokio::test]
async fn forward_auth_believes_only_trusted_front_proxies() {
    let (idp, echo, proxy, _nginx, _origin) = nginx_stack().await;
    let alice = idp.bearer("alice").await;
    let http = reqwest::Client::new();
    let auth = format!("http://{}/.sekisho/auth", proxy.http);

    // The test (127.0.0.1) is not a trusted proxy: whatever it claims, it gets no answer.
    let forged = http
        .get(&auth)
        .bearer_auth(&alice)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-host", HOST)
        .header("x-forwarded-uri", "/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("x-sekisho-user").is_none());

    // Through nginx, a client's own X-Forwarded-Uri rides along with nginx's X-Original-URI:
    // the two disagree, and sekisho refuses rather than guess.
    let bob = idp.bearer("bob").await;
    let hits = echo.hits();
    let nginx_port = _nginx.addr.port();
    let response = client(nginx_port)
        .get(format!("http://{HOST}:{nginx_port}/admin/users"))
        .bearer_auth(&bob)
        .header("x-forwarded-uri", "/hello")
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), 200);
    assert_eq!(
        echo.hits(),
        hits,
        "bob's /admin request reached the upstream"
    );

    let audit = proxy.audit_dir();
    eventually("the untrusted question is recorded", || {
        let audit = audit.clone();
        async move {
            audit_records(&audit).iter().any(|r| {
                r["unmapped"]["door"] == "forward-auth"
                    && r["http_response"]["code"] == 403
                    && r["src_endpoint"]["ip"] == "127.0.0.1"
            })
        }
    })
    .await;
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A session whose cookie sekisho re-issues (here: touched for the idle lifetime, every second
/// with `idle_lifetime: 10s`) must keep its new cookie behind each front proxy, or the session
/// ends at its idle lifetime however busy the user is.
#[tokio::test]
async fn a_reissued_session_cookie_reaches_the_browser_behind_both_front_proxies() {
    let customize = |o: &mut sekisho_tests::ProxyOptions| {
        o.routes_yaml = routes();
        o.session_yaml = "  idle_lifetime: 10s\n".to_owned();
    };
    let (idp, echo, proxy) = stack(Default::default(), "ES256", |o| {
        customize(o);
        o.server_yaml = "  trusted_proxies: [127.0.0.1, 127.0.0.2]\n".to_owned();
    })
    .await;
    let nginx = Nginx::start(&nginx_site(&proxy.http.to_string(), &echo.addr.to_string())).await;
    let caddy = Caddy::start(
        HOST,
        &caddy_site(&proxy.http.to_string(), &echo.addr.to_string()),
    )
    .await;
    let alice = sekisho_tests::Agent::new();
    alice
        .login(
            &format!("{}/hello", proxy.base()),
            &idp.issuer,
            "alice",
            "alice-pw",
        )
        .await;
    let first = alice.cookies()["_sekisho"].clone();

    for (front, port) in [("caddy", caddy.addr.port()), ("nginx", nginx.addr.port())] {
        let http = client(port);
        let url = format!("http://{HOST}:{port}/hello?x=1");
        let cookie =
            std::sync::Arc::new(std::sync::Mutex::new(alice.cookies()["_sekisho"].clone()));
        let reissued: std::sync::Arc<std::sync::Mutex<Option<(u16, String)>>> =
            std::sync::Arc::default();
        eventually(&format!("a re-issued cookie through {front}"), || {
            let (http, url, cookie, reissued) =
                (http.clone(), url.clone(), cookie.clone(), reissued.clone());
            async move {
                let current = cookie.lock().unwrap().clone();
                let response = http
                    .get(&url)
                    .header("accept", "text/html")
                    .header("cookie", format!("_sekisho={current}"))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                assert!(
                    status == 200 || status == 302,
                    "{front}: a live session got {status}"
                );
                if status == 302 {
                    assert_eq!(
                        response.headers()["location"].to_str().unwrap(),
                        "/hello?x=1",
                        "{front}: the redirect goes back where the browser was"
                    );
                }
                let set = sekisho_tests::session_cookies_set(&response);
                match set.first() {
                    Some(value) => {
                        *reissued.lock().unwrap() = Some((status, value.clone()));
                        true
                    }
                    None => false,
                }
            }
        })
        .await;
        let (status, fresh) = reissued.lock().unwrap().clone().unwrap();
        // nginx passes the cookie on the answer itself; Caddy on a redirect back.
        assert_eq!(status, if front == "nginx" { 200 } else { 302 }, "{front}");
        assert_ne!(fresh, first, "{front}: the cookie was re-issued");
        let again = http
            .get(&url)
            .header("accept", "text/html")
            .header("cookie", format!("_sekisho={fresh}"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 200, "{front}: the fresh cookie is accepted");
        let echoed = Echoed(again.json().await.unwrap());
        assert_eq!(echoed.header("x-sekisho-user").as_deref(), Some("alice"));
    }
}
