//! The sign-in form: the password step and, for accounts with TOTP, the one-time-code step.
//! Each form carries its pending authorization sealed and bound to the browser cookie it was
//! shown with (CSRF, login CSRF) and is good for [`FORM_ATTEMPTS`] checks; every attempt is
//! counted against the failure limits before its check (and refunded when it passes) and is
//! reported as an [`IdpEvent`]; unknown accounts cost one Argon2id verification like known ones.

use std::time::Instant;

use http::{Response, StatusCode};
use sekisho_config::IdpUser;

use super::limits::{Lockout, Reservation};
use super::password::Pool;
use super::store::{FORM_ATTEMPTS, SignIn};
use super::{
    Call, FORM_LIFETIME, IdentityProvider, IdpEvent, IdpFailure, IdpOutcome, Interaction, Pending,
    SECOND_STEP_LIFETIME, oauth, pages, random_token,
};
use crate::error::ProxyBody;
use crate::seal::Purpose;

/// Shown after any failed password: it does not say whether the account exists.
const WRONG_PASSWORD: &str = "Incorrect username or password.";
/// Shown after a failed one-time code.
const WRONG_CODE: &str = "Incorrect or already used code.";

impl IdentityProvider {
    /// The sign-in form for `pending`.
    pub(super) fn sign_in_page(
        &self,
        pending: &Pending,
        username: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let Some(sealed) = self.seal_interaction(&Interaction::Login(pending.clone())) else {
            return super::internal("sealing failed");
        };
        let origin = oauth::origin_of(&pending.redirect_uri).unwrap_or_default();
        pages::sign_in(
            &pages::SignInPage {
                action: &self.path("/login"),
                interaction: &sealed,
                client_id: &pending.client_id,
                username,
                error,
                return_origin: &origin,
            },
            status,
        )
    }

    /// The one-time-code form after a correct password.
    fn code_page(
        &self,
        pending: &Pending,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let Some(sealed) = self.seal_interaction(&Interaction::Login(pending.clone())) else {
            return super::internal("sealing failed");
        };
        let origin = oauth::origin_of(&pending.redirect_uri).unwrap_or_default();
        pages::one_time_code(&self.path("/login/code"), &sealed, error, &origin, status)
    }

    /// Opens the pending authorization a form carries, checking that it was issued to this
    /// browser, is recent and was not completed before.
    fn form_pending(
        &self,
        call: &Call,
        params: &std::collections::HashMap<String, String>,
    ) -> Result<Pending, Box<Response<ProxyBody>>> {
        let opened = params
            .get("interaction")
            .and_then(|sealed| self.open_interaction(sealed));
        let Some(Interaction::Login(pending)) = opened else {
            return Err(Box::new(pages::message(
                StatusCode::BAD_REQUEST,
                "Sign-in form invalid",
                "This sign-in form is invalid. Go back to the application and start again.",
            )));
        };
        if self.presented_binding(&call.headers).as_deref() != Some(pending.browser.as_str()) {
            tracing::warn!(source_ip = %call.client_ip, client_id = ?pending.client_id, "identity provider: sign-in form posted by another browser (CSRF) refused");
            return Err(Box::new(pages::message(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This sign-in form was not issued to this browser. Go back to the application and start again.",
            )));
        }
        if call.now > pending.created.saturating_add(FORM_LIFETIME) {
            return Err(Box::new(pages::message(
                StatusCode::BAD_REQUEST,
                "Sign-in form expired",
                "This sign-in form has expired. Go back to the application and start again.",
            )));
        }
        if self.store.form_used(&pending.id) {
            return Err(Box::new(pages::message(
                StatusCode::BAD_REQUEST,
                "Sign-in form used",
                "This sign-in form was already used. Go back to the application and start again.",
            )));
        }
        Ok(pending)
    }

    /// `POST /login`: the password step.
    pub(super) async fn login(&self, call: &Call) -> Response<ProxyBody> {
        let params = match call.params() {
            Ok(params) => params,
            Err(name) => {
                return pages::message(
                    StatusCode::BAD_REQUEST,
                    "Request refused",
                    &format!("The field `{name}` is repeated."),
                );
            }
        };
        let pending = match self.form_pending(call, &params) {
            Ok(pending) => pending,
            Err(response) => return *response,
        };
        if pending.password_ok.is_some() {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Request refused",
                "This form belongs to another step.",
            );
        }
        let login = params.get("username").map_or("", |s| s.trim()).to_owned();
        let password = params.get("password").map_or("", String::as_str);
        let directory = self.directory();
        let user = directory.find_login(&login);
        let account = user.map_or_else(|| login.to_lowercase(), |u| u.username.clone());
        let event = |outcome| IdpEvent {
            outcome,
            login: login.to_lowercase(),
            username: user.map(|u| u.username.clone()),
            email: user.map(|u| u.email.clone()),
            source_ip: call.client_ip,
            client_id: pending.client_id.clone(),
            time: call.now,
        };
        let reservation = match self.reserve_attempt(&pending, &account, call, &event) {
            Ok(reservation) => reservation,
            Err(response) => return *response,
        };
        let matched = self
            .passwords
            .verify(
                Pool::SignIn,
                user.map(|u| u.password_hash.expose()),
                password,
            )
            .await;
        let user = match (user, matched) {
            (Some(user), true) => {
                self.limiter.refund(reservation);
                user
            }
            (user, _) => {
                // The reservation stays: a failure of the account and of the source.
                let reason = if user.is_some() {
                    IdpFailure::WrongPassword
                } else {
                    IdpFailure::UnknownUser
                };
                self.event(event(IdpOutcome::Failure(reason)));
                return self.sign_in_page(
                    &pending,
                    &login,
                    Some(WRONG_PASSWORD),
                    StatusCode::UNAUTHORIZED,
                );
            }
        };
        if user.totp_secret.is_some() {
            let second = Pending {
                password_ok: Some((user.username.clone(), call.now)),
                ..pending
            };
            return self.code_page(&second, None, StatusCode::OK);
        }
        self.event(event(IdpOutcome::Success));
        self.complete(call, &pending, user, vec!["pwd".into()])
    }

    /// `POST /login/code`: the one-time-code step.
    pub(super) async fn second_step(&self, call: &Call) -> Response<ProxyBody> {
        let params = match call.params() {
            Ok(params) => params,
            Err(name) => {
                return pages::message(
                    StatusCode::BAD_REQUEST,
                    "Request refused",
                    &format!("The field `{name}` is repeated."),
                );
            }
        };
        let pending = match self.form_pending(call, &params) {
            Ok(pending) => pending,
            Err(response) => return *response,
        };
        let Some((username, at)) = pending.password_ok.clone() else {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Request refused",
                "This form belongs to another step.",
            );
        };
        if call.now > at.saturating_add(SECOND_STEP_LIFETIME) {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Sign-in form expired",
                "The time for the code has run out. Go back to the application and start again.",
            );
        }
        let directory = self.directory();
        let Some(user) = directory.user(&username) else {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Request refused",
                "This account no longer exists.",
            );
        };
        let Some(secret) = &user.totp_secret else {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Request refused",
                "This account has no second factor.",
            );
        };
        let event = |outcome| IdpEvent {
            outcome,
            login: username.clone(),
            username: Some(username.clone()),
            email: Some(user.email.clone()),
            source_ip: call.client_ip,
            client_id: pending.client_id.clone(),
            time: call.now,
        };
        let reservation = match self.reserve_attempt(&pending, &username, call, &event) {
            Ok(reservation) => reservation,
            Err(response) => return *response,
        };
        let code = params.get("code").map_or("", String::as_str);
        let failure = match super::totp::verify(secret.expose(), code, call.now) {
            Some(step) if self.store.claim_totp_step(&username, step) => None,
            Some(_) => Some(IdpFailure::ReusedCode),
            None => Some(IdpFailure::WrongCode),
        };
        if let Some(reason) = failure {
            // The reservation stays: a failure of the account and of the source.
            self.event(event(IdpOutcome::Failure(reason)));
            return self.code_page(&pending, Some(WRONG_CODE), StatusCode::UNAUTHORIZED);
        }
        self.limiter.refund(reservation);
        self.event(event(IdpOutcome::Success));
        self.complete(
            call,
            &pending,
            user,
            vec!["pwd".into(), "otp".into(), "mfa".into()],
        )
    }

    /// Counts one check of `account` from the caller's source on the form of `pending`, before
    /// the check is made. Refused (with an event): 400 when the form has had its
    /// [`FORM_ATTEMPTS`], 429 when the account or the source is locked out (the form attempt
    /// is then given back).
    fn reserve_attempt(
        &self,
        pending: &Pending,
        account: &str,
        call: &Call,
        event: &dyn Fn(IdpOutcome) -> IdpEvent,
    ) -> Result<Reservation, Box<Response<ProxyBody>>> {
        let form_until = pending.created.saturating_add(FORM_LIFETIME);
        if !self
            .store
            .reserve_form_attempt(&pending.id, form_until, call.now)
        {
            self.event(event(IdpOutcome::Failure(IdpFailure::FormExhausted)));
            return Err(Box::new(pages::message(
                StatusCode::BAD_REQUEST,
                "Sign-in form used up",
                &format!(
                    "This sign-in form has had its {FORM_ATTEMPTS} attempts. Go back to the application and start again."
                ),
            )));
        }
        match self
            .limiter
            .reserve(account, call.client_ip, Instant::now())
        {
            Ok(reservation) => Ok(reservation),
            Err(lockout) => {
                self.store.refund_form_attempt(&pending.id);
                let (reason, left) = match lockout {
                    Lockout::Account(left) => (IdpFailure::AccountLocked, left),
                    Lockout::Source(left) => (IdpFailure::SourceLocked, left),
                };
                self.event(event(IdpOutcome::Failure(reason)));
                Err(Box::new(pages::locked(left)))
            }
        }
    }

    /// Every factor checked: starts the sign-in (cookie), issues the code, returns to the client.
    fn complete(
        &self,
        call: &Call,
        pending: &Pending,
        user: &IdpUser,
        amr: Vec<String>,
    ) -> Response<ProxyBody> {
        self.limiter.succeed(&user.username);
        if !self.store.claim_form(
            &pending.id,
            pending.created.saturating_add(FORM_LIFETIME),
            call.now,
        ) {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Sign-in form used",
                "This sign-in form was already used. Go back to the application and start again.",
            );
        }
        let Some(sid) = random_token(16) else {
            return super::internal("random source failed");
        };
        let lifetime = self.directory().session_lifetime.as_secs();
        let sign_in = SignIn {
            username: user.username.clone(),
            sid,
            auth_time: call.now,
            amr,
            expires_at: call.now.saturating_add(lifetime),
        };
        let sealed = serde_json::to_vec(&sign_in)
            .ok()
            .and_then(|plain| self.sealer.seal(Purpose::IdpSession, &plain).ok());
        let Some(sealed) = sealed else {
            return super::internal("sealing failed");
        };
        let cookies: Vec<_> = self
            .set_cookie(&self.session_cookie, &sealed, Some(lifetime))
            .into_iter()
            .collect();
        self.code_redirect(pending, &sign_in, call.now, StatusCode::SEE_OTHER, cookies)
    }
}
