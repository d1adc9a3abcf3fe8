//! Which request follows a redirect: the one redirect policy every transport uses.
//!
//! The official SDK follows redirects by default (httpx `follow_redirects=True`, protocol.md 1.1),
//! so the transports do too. They do not let their HTTP library decide how: reqwest's and ureq's
//! built-in policies strip only `Authorization` when a redirect leaves the origin, and would hand
//! the user's `X-API-Key` to whatever host a `Location` header names. Instead each transport
//! switches its library's redirect following off and loops on [`next_request`], which drops every
//! credential header as soon as the scheme or the authority changes. One decision, tested once
//! here, and the API key never follows a redirect to another origin.
//!
//! Method and body rewriting follows httpx: 303 (and 302) turn any method but `HEAD` into a
//! body-less `GET`, 301 does so for a `POST` only, and 307/308 resend method and body unchanged.

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request, StatusCode, Uri};

/// Redirect hops a transport follows for one request before failing with a protocol error
/// ("more than 10 redirects"). httpx and reqwest use the same bound.
pub const MAX_REDIRECTS: usize = 10;

/// Request headers that carry secrets and must not follow a redirect to another origin.
pub const CREDENTIAL_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-api-key"),
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
];

/// Headers describing a request body, removed when a redirect turns the request into a `GET`.
const BODY_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
];

/// The request to send after `sent` was answered with `status` and `headers`, or `None` when the
/// response is not a redirect to follow (not 301/302/303/307/308, no usable `Location`).
///
/// Counting hops is the caller's job: it stops after [`MAX_REDIRECTS`].
///
/// ```
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use tinker_core::redirect::next_request;
///
/// let sent = http::Request::post("https://tinker.example/api/v1/create_model")
///     .header("x-api-key", "tml-secret")
///     .body(Bytes::from_static(b"{}"))
///     .unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert("location", "https://elsewhere.example/upload".parse().unwrap());
///
/// let next = next_request(&sent, StatusCode::TEMPORARY_REDIRECT, &headers).unwrap();
/// assert_eq!(next.uri(), "https://elsewhere.example/upload");
/// assert_eq!(next.body(), &Bytes::from_static(b"{}"), "307 resends the body");
/// assert!(next.headers().get("x-api-key").is_none(), "the key stays with its origin");
/// ```
pub fn next_request(
    sent: &Request<Bytes>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Request<Bytes>> {
    let becomes_get = match status {
        StatusCode::SEE_OTHER | StatusCode::FOUND => sent.method() != Method::HEAD,
        StatusCode::MOVED_PERMANENTLY => sent.method() == Method::POST,
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => false,
        _ => return None,
    };
    let location = headers.get(header::LOCATION)?.to_str().ok()?;
    let target = resolve(sent.uri(), location)?;

    let mut next = sent.clone();
    if becomes_get {
        *next.method_mut() = Method::GET;
        *next.body_mut() = Bytes::new();
        for name in BODY_HEADERS {
            next.headers_mut().remove(name);
        }
    }
    let same_origin =
        target.scheme() == sent.uri().scheme() && target.authority() == sent.uri().authority();
    if !same_origin {
        for name in CREDENTIAL_HEADERS {
            next.headers_mut().remove(name);
        }
    }
    // The HTTP stack derives Host from the new URI; a stale one would name the old server.
    next.headers_mut().remove(header::HOST);
    *next.uri_mut() = target;
    Some(next)
}

/// How long a checkpoint archive URL is taken to be valid when its 302 has no `Expires` header
/// (the official SDK's default, protocol.md 6.9).
const ARCHIVE_URL_DEFAULT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The 0.25 checkpoint-archive endpoint (`GET …/training_runs/{id}/checkpoints/{cid}/archive`,
/// protocol.md 6.9) may answer its signed URL as a redirect that the SDK reads and does **not**
/// follow (following it would download the whole archive as if it were the JSON reply). For such
/// a response this returns the equivalent 200 body, `{"url": <Location>, "expires": <Expires, or
/// now + 15 min>}`, which the endpoint decodes like the server's other answer; for any other
/// request or status, `None` (then [`next_request`] applies).
///
/// `now` is the caller's wall clock (the core reads none).
pub fn archive_redirect_reply(
    sent: &Request<Bytes>,
    status: StatusCode,
    headers: &HeaderMap,
    now: std::time::SystemTime,
) -> Option<Bytes> {
    let path = sent.uri().path();
    let is_archive = sent.method() == Method::GET
        && path.contains("/api/v1/training_runs/")
        && path.ends_with("/archive");
    if !is_archive || !status.is_redirection() {
        return None;
    }
    let location = headers.get(header::LOCATION)?.to_str().ok()?;
    let url = resolve(sent.uri(), location)?;
    let expires = headers
        .get(header::EXPIRES)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(now + ARCHIVE_URL_DEFAULT_VALIDITY);
    let secs = expires
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let body = serde_json::json!({
        "url": url.to_string(),
        "expires": crate::types::Timestamp::from_unix_seconds(secs),
    });
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

/// What a transport does with the response to the request it `sent`: the whole redirect decision
/// (see [`after_response`]).
#[derive(Debug)]
pub enum AfterResponse {
    /// Return this synthesized `200 application/json` reply instead of the response (the
    /// checkpoint-archive endpoint's redirect, see [`archive_redirect_reply`]).
    Reply(http::Response<Bytes>),
    /// Send this request next (a redirect to follow, see [`next_request`]); the caller counts
    /// hops up to [`MAX_REDIRECTS`].
    Follow(Request<Bytes>),
    /// Return the response as it is.
    Deliver,
}

/// The one decision every transport makes after each response: read the archive endpoint's
/// redirect as its answer, follow any other redirect, or deliver the response. Adapters call only
/// this, so they cannot disagree on which redirect is followed. `now` is the caller's wall clock.
///
/// ```
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use tinker_core::redirect::{after_response, AfterResponse};
///
/// let sent = http::Request::get(
///     "https://tinker.example/api/v1/training_runs/run-1/checkpoints/weights/final/archive",
/// )
/// .body(Bytes::new())
/// .unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert("location", "https://store.example/a.tar?sig=1".parse().unwrap());
///
/// let now = std::time::UNIX_EPOCH;
/// let AfterResponse::Reply(reply) = after_response(&sent, StatusCode::FOUND, &headers, now) else {
///     panic!("the archive URL is read, not followed");
/// };
/// assert_eq!(reply.status(), StatusCode::OK);
/// assert!(matches!(
///     after_response(&sent, StatusCode::OK, &HeaderMap::new(), now),
///     AfterResponse::Deliver
/// ));
/// ```
pub fn after_response(
    sent: &Request<Bytes>,
    status: StatusCode,
    headers: &HeaderMap,
    now: std::time::SystemTime,
) -> AfterResponse {
    if let Some(body) = archive_redirect_reply(sent, status, headers, now) {
        let mut reply = http::Response::new(body);
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return AfterResponse::Reply(reply);
    }
    match next_request(sent, status, headers) {
        Some(next) => AfterResponse::Follow(next),
        None => AfterResponse::Deliver,
    }
}

/// Resolves a `Location` value against the URL it answered: an absolute URL, or an absolute path
/// on the same origin.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let location: Uri = location.parse().ok()?;
    if location.scheme().is_some() {
        return Some(location);
    }
    let mut parts = location.into_parts();
    // Relative paths ("next" without a slash) and scheme-relative URLs ("//host/path", which the
    // http crate reads as a path) are not used by HTTP APIs; refuse them rather than guess.
    let path = parts.path_and_query.as_ref()?.path();
    if parts.authority.is_some() || !path.starts_with('/') || path.starts_with("//") {
        return None;
    }
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_archive_redirect_becomes_its_json_reply_and_other_redirects_do_not() {
        let sent = Request::get(
            "https://t.example/base/api/v1/training_runs/r:train:0/checkpoints/weights/s1/archive",
        )
        .body(Bytes::new())
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            "https://store.example/a.tar?sig=1".parse().unwrap(),
        );
        headers.insert(
            header::EXPIRES,
            "Thu, 01 Jan 2026 00:15:00 GMT".parse().unwrap(),
        );
        let now = std::time::UNIX_EPOCH;

        let body = archive_redirect_reply(&sent, StatusCode::FOUND, &headers, now).unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["url"], "https://store.example/a.tar?sig=1");
        assert_eq!(reply["expires"], "2026-01-01T00:15:00Z");

        headers.remove(header::EXPIRES);
        let body = archive_redirect_reply(&sent, StatusCode::FOUND, &headers, now).unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            reply["expires"], "1970-01-01T00:15:00Z",
            "default validity 15 min"
        );

        let other = Request::get("https://t.example/api/v1/training_runs/r:train:0")
            .body(Bytes::new())
            .unwrap();
        assert!(archive_redirect_reply(&other, StatusCode::FOUND, &headers, now).is_none());
        assert!(archive_redirect_reply(&sent, StatusCode::OK, &headers, now).is_none());
    }

    use super::*;

    const KEY: &str = "tml-secret";

    fn post(url: &str, body: &'static [u8]) -> Request<Bytes> {
        Request::post(url)
            .header("x-api-key", KEY)
            .header("authorization", "Bearer jwt")
            .header("cookie", "session=1")
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string())
            .header("host", "api.tinker.example")
            .header("idempotency-key", "k-1")
            .body(Bytes::from_static(body))
            .unwrap()
    }

    fn answer(location: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, location.parse().unwrap());
        headers
    }

    fn names(request: &Request<Bytes>) -> Vec<&str> {
        request.headers().keys().map(|n| n.as_str()).collect()
    }

    #[test]
    fn a_same_origin_307_resends_the_post_with_its_key_and_body() {
        let sent = post("https://api.tinker.example/api/v1/forward", b"{\"x\":1}");

        let next = next_request(
            &sent,
            StatusCode::TEMPORARY_REDIRECT,
            &answer("/api/v2/forward?retry=1"),
        )
        .expect("a 307 with a Location is followed");

        assert_eq!(next.method(), Method::POST);
        assert_eq!(
            next.uri(),
            "https://api.tinker.example/api/v2/forward?retry=1"
        );
        assert_eq!(next.body(), &Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(next.headers()["x-api-key"], KEY);
        assert_eq!(next.headers()["authorization"], "Bearer jwt");
        assert_eq!(next.headers()["content-type"], "application/json");
        assert_eq!(next.headers()["idempotency-key"], "k-1");
        assert!(
            next.headers().get("host").is_none(),
            "Host comes from the new URI"
        );
    }

    #[test]
    fn a_308_to_another_origin_keeps_the_body_but_drops_every_credential() {
        let sent = post("https://api.tinker.example/upload", b"weights");

        let next = next_request(
            &sent,
            StatusCode::PERMANENT_REDIRECT,
            &answer("https://storage.example/bucket/object"),
        )
        .unwrap();

        assert_eq!(next.method(), Method::POST);
        assert_eq!(next.body(), &Bytes::from_static(b"weights"));
        for credential in ["x-api-key", "authorization", "cookie"] {
            assert!(
                next.headers().get(credential).is_none(),
                "{credential} leaked to storage.example: {:?}",
                names(&next)
            );
        }
        assert_eq!(next.headers()["idempotency-key"], "k-1");
    }

    #[test]
    fn a_cross_origin_302_drops_the_api_key_and_turns_the_post_into_a_get() {
        let sent = post("https://api.tinker.example/api/v1/archive", b"{}");

        let next = next_request(
            &sent,
            StatusCode::FOUND,
            &answer("https://signed.example/file?sig=abc"),
        )
        .unwrap();

        assert_eq!(next.method(), Method::GET);
        assert_eq!(next.uri(), "https://signed.example/file?sig=abc");
        assert!(next.body().is_empty());
        assert_eq!(
            names(&next),
            ["idempotency-key"],
            "no credential, no body header, no Host"
        );
    }

    #[test]
    fn another_port_or_scheme_on_the_same_host_is_another_origin() {
        let sent = post("http://127.0.0.1:8000/start", b"");
        for location in [
            "http://127.0.0.1:8001/start",
            "https://127.0.0.1:8000/start",
        ] {
            let next =
                next_request(&sent, StatusCode::TEMPORARY_REDIRECT, &answer(location)).unwrap();
            assert!(
                next.headers().get("x-api-key").is_none(),
                "the key followed to {location}"
            );
        }
    }

    #[test]
    fn a_303_turns_a_post_into_a_get_without_body_headers() {
        let sent = post("https://api.tinker.example/api/v1/create", b"{\"a\":2}");

        let next = next_request(&sent, StatusCode::SEE_OTHER, &answer("/api/v1/result/7")).unwrap();

        assert_eq!(next.method(), Method::GET);
        assert_eq!(next.uri(), "https://api.tinker.example/api/v1/result/7");
        assert!(next.body().is_empty());
        for body_header in ["content-type", "content-length"] {
            assert!(
                next.headers().get(body_header).is_none(),
                "{body_header} kept"
            );
        }
        assert_eq!(
            next.headers()["x-api-key"],
            KEY,
            "same origin keeps the key"
        );
    }

    #[test]
    fn a_301_changes_a_post_into_a_get_but_resends_a_put() {
        let moved = answer("/new");
        let post = post("https://api.tinker.example/old", b"{}");
        let mut put = post.clone();
        *put.method_mut() = Method::PUT;

        let after_post = next_request(&post, StatusCode::MOVED_PERMANENTLY, &moved).unwrap();
        let after_put = next_request(&put, StatusCode::MOVED_PERMANENTLY, &moved).unwrap();

        assert_eq!(after_post.method(), Method::GET);
        assert!(after_post.body().is_empty());
        assert_eq!(after_put.method(), Method::PUT);
        assert_eq!(after_put.body(), &Bytes::from_static(b"{}"));
    }

    #[test]
    fn a_head_stays_a_head_after_a_303() {
        let mut head = post("https://api.tinker.example/a", b"");
        *head.method_mut() = Method::HEAD;

        let next = next_request(&head, StatusCode::SEE_OTHER, &answer("/b")).unwrap();

        assert_eq!(next.method(), Method::HEAD);
    }

    #[test]
    fn a_relative_or_unusable_location_is_refused() {
        let sent = post("https://api.tinker.example/api/v1/x", b"{}");
        for location in ["next", "../up", "//other.example/path", "http://[bad"] {
            assert!(
                next_request(&sent, StatusCode::FOUND, &answer(location)).is_none(),
                "followed {location:?}"
            );
        }
        assert!(
            next_request(&sent, StatusCode::FOUND, &HeaderMap::new()).is_none(),
            "a redirect without Location is returned as it is"
        );
    }

    #[test]
    fn other_statuses_are_answers_not_redirects() {
        let sent = post("https://api.tinker.example/api/v1/x", b"{}");
        let location = answer("/elsewhere");
        for status in [200, 201, 204, 300, 304, 305, 306, 400, 404, 500, 503] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                next_request(&sent, status, &location).is_none(),
                "{status} was followed"
            );
        }
    }

    #[test]
    fn every_hop_is_decided_afresh_so_the_caller_counts_them() {
        // A server redirecting to itself forever: the policy follows each hop; bounding the chain
        // at MAX_REDIRECTS is the transport's loop.
        let mut request = post("https://api.tinker.example/loop", b"{}");
        for _ in 0..=MAX_REDIRECTS {
            request =
                next_request(&request, StatusCode::TEMPORARY_REDIRECT, &answer("/loop")).unwrap();
        }
        assert_eq!(request.uri(), "https://api.tinker.example/loop");
        assert_eq!(MAX_REDIRECTS, 10);
    }

    #[test]
    fn once_dropped_a_key_does_not_come_back_on_a_redirect_home() {
        let sent = post("https://api.tinker.example/a", b"");
        let away =
            next_request(&sent, StatusCode::FOUND, &answer("https://other.example/b")).unwrap();

        let back = next_request(
            &away,
            StatusCode::FOUND,
            &answer("https://api.tinker.example/c"),
        )
        .unwrap();

        assert!(back.headers().get("x-api-key").is_none());
    }
}
