//! Who is using the console: the guard in front of every page (the access
//! rule, the browser's session and its CSRF token, the notice an action
//! left), the headers every response carries, and signing in and out.

use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use serde::Deserialize;
use tracing::warn;

use super::access;
use super::pages::{self, Frame};
use super::{Console, CONTENT_SECURITY_POLICY, NOTICE_COOKIE};

/// The browser's session, as the guard found or made it.
#[derive(Clone, Debug, Default)]
pub(super) struct Session {
    nonce: Option<String>,
    signed_in: bool,
    notice: Option<String>,
}

impl Session {
    pub(super) fn frame<'a>(&'a self, console: &Console, csrf: &'a mut String) -> Frame<'a> {
        if let Some(nonce) = &self.nonce {
            *csrf = console.inner.access.csrf_token(nonce);
        }
        Frame {
            csrf,
            notice: self.notice.as_deref(),
            signed_in: self.signed_in,
        }
    }
}

/// Lets through requests the access rule allows, sending browsers to sign
/// in otherwise; gives every browser a session (the CSRF tokens hang on
/// it) and hands over a pending notice.
pub(super) async fn guard(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let access = &console.inner.access;
    let headers = request.headers();
    if !access.authorizes(headers) {
        if request.method() == Method::GET {
            let next_path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let target = format!(
                "/sign-in?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next_path)
                    .finish()
            );
            return Redirect::to(&target).into_response();
        }
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    let existing = access.session_nonce(headers).map(str::to_owned);
    let fresh = if existing.is_none() && !access.needs_token() {
        Some(access.new_session())
    } else {
        None
    };
    let nonce = existing.or_else(|| {
        fresh
            .as_deref()
            .and_then(|s| access.verify_session(s))
            .map(str::to_owned)
    });
    let notice = access::cookie(headers, NOTICE_COOKIE)
        .and_then(|v| BASE64URL.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let had_notice = notice.is_some();
    request.extensions_mut().insert(Session {
        signed_in: access.needs_token() && nonce.is_some(),
        nonce,
        notice,
    });
    let is_get = request.method() == Method::GET;
    let mut response = next.run(request).await;
    if let Some(session) = fresh {
        append_cookie(&mut response, &access::session_cookie(&session));
    }
    if had_notice && is_get && response.status() == StatusCode::OK {
        append_cookie(
            &mut response,
            &format!("{NOTICE_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        );
    }
    response
}

pub(super) fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub(super) async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A local path to return to, or the overview.
pub(super) fn local_path(back: Option<&str>) -> &str {
    match back {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/",
    }
}

pub(super) fn forbidden(reason: &str) -> Response {
    let frame = Frame {
        csrf: "",
        notice: None,
        signed_in: false,
    };
    (
        StatusCode::FORBIDDEN,
        Html(pages::problem(&frame, "Refused", reason).into_string()),
    )
        .into_response()
}

/// Why a state-changing request fails the CSRF check, if it does.
pub(super) fn csrf_refusal(
    console: &Console,
    session: &Session,
    headers: &HeaderMap,
    token: &str,
) -> Option<Response> {
    if !access::same_origin(headers) {
        return Some(forbidden(
            "This request did not come from a console page (its Origin or Referer does not name this server).",
        ));
    }
    match &session.nonce {
        Some(nonce) if console.inner.access.csrf_matches(nonce, token) => None,
        _ => Some(forbidden(
            "This form is out of date or was not made by this console; reload the page and try again.",
        )),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInQuery {
    next: Option<String>,
}

pub(super) async fn sign_in_page(
    State(console): State<Console>,
    Query(query): Query<SignInQuery>,
) -> Response {
    if !console.inner.access.needs_token() {
        return Redirect::to("/").into_response();
    }
    Html(pages::sign_in(local_path(query.next.as_deref()), false).into_string()).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !access::same_origin(&headers) {
        return forbidden("Sign in from the console's own sign-in page.");
    }
    let next = local_path(form.next.as_deref());
    if !console.inner.access.token_matches(&form.token) {
        // Each wrong guess costs the guesser time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        warn!("console sign-in with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::sign_in(next, true).into_string()),
        )
            .into_response();
    }
    let mut response = Redirect::to(next).into_response();
    append_cookie(
        &mut response,
        &access::session_cookie(&console.inner.access.new_session()),
    );
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct SignOutForm {
    csrf: String,
}

pub(super) async fn sign_out(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Response {
    if let Some(refused) = csrf_refusal(&console, &session, &headers, &form.csrf) {
        return refused;
    }
    let mut response = Redirect::to("/sign-in").into_response();
    append_cookie(
        &mut response,
        &format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            access::SESSION_COOKIE
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(
            local_path(Some("/subscriptions/1?state=dead")),
            "/subscriptions/1?state=dead"
        );
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }
}
