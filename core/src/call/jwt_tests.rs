//! A call whose JWT the server rejects (401 `invalid_token`, protocol.md 2.3): one exchange,
//! sent with the API key, then one replay with the new token; a second rejection surfaces.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;

use super::CallOptions;
use crate::error::ErrorKind;
use crate::ledger::Ledger;
use crate::ops::TypedCall;
use crate::sim::{run_one, Reply, Server, Sim, VirtualClock};
use crate::types::GetInfoRequest;

/// Answers from a list and remembers which credential each request carried.
struct KeyRecorder {
    replies: VecDeque<Reply>,
    seen: Vec<(String, String)>,
}

impl Server for KeyRecorder {
    fn respond(&mut self, request: &http::Request<Bytes>, _now: Instant) -> Reply {
        let key = request
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let path = request
            .uri()
            .path()
            .trim_start_matches("/api/v1/")
            .to_owned();
        self.seen.push((path, key));
        self.replies
            .pop_front()
            .unwrap_or_else(|| Reply::json(500, r#"{"detail":"script exhausted"}"#))
    }
}

fn jwt(n: u64) -> String {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"iat":1000000,"exp":1003600,"jti":"{n}"}}"#));
    format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig{n}")
}

fn rejected() -> Reply {
    Reply::json(401, r#"{"detail":"Token has expired"}"#)
        .with_header("www-authenticate", "Bearer error=\"invalid_token\"")
}

fn token_reply(n: u64) -> Reply {
    Reply::json(200, format!(r#"{{"jwt":"{}"}}"#, jwt(n)))
}

const INFO: &str = r#"{"model_id":"m","model_data":{}}"#;

/// A ledger in JWT mode holding token 1, its API key being the simulator's.
fn jwt_ledger(clock: &VirtualClock) -> Ledger {
    let mut ledger = Sim::ledger(3);
    ledger.set_wall_clock(
        clock.now(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    ledger.enable_jwt();
    ledger.install_jwt(jwt(1), clock.now()).unwrap();
    ledger
}

fn get_info(ledger: &mut Ledger) -> TypedCall<crate::types::GetInfoResponse> {
    crate::ops::direct(ledger, GetInfoRequest::new("m"), CallOptions::default()).unwrap()
}

#[allow(clippy::disallowed_methods)]
fn clock() -> VirtualClock {
    VirtualClock::new(Instant::now())
}

#[test]
fn a_rejected_token_is_exchanged_with_the_api_key_and_the_request_replayed_once() {
    let clock = clock();
    let mut ledger = jwt_ledger(&clock);
    let mut server = KeyRecorder {
        replies: VecDeque::from([rejected(), token_reply(2), Reply::json(200, INFO)]),
        seen: Vec::new(),
    };
    let op = get_info(&mut ledger);
    let (result, _) = run_one(op, &mut ledger, &mut server, &clock);
    assert!(result.is_ok(), "{result:?}");
    let expected = vec![
        ("get_info".to_owned(), jwt(1)),
        ("auth/token".to_owned(), "tml-sim-key-0001".to_owned()),
        ("get_info".to_owned(), jwt(2)),
    ];
    assert_eq!(server.seen, expected);
    // Later requests use the new token too.
    assert_eq!(ledger.context().credential().expose(), jwt(2));
    assert!(!ledger.jwt().unwrap().is_exchanging());
}

#[test]
fn a_second_rejection_after_the_replay_is_the_caller_s_error() {
    let clock = clock();
    let mut ledger = jwt_ledger(&clock);
    let mut server = KeyRecorder {
        replies: VecDeque::from([rejected(), token_reply(2), rejected()]),
        seen: Vec::new(),
    };
    let op = get_info(&mut ledger);
    let (result, _) = run_one(op, &mut ledger, &mut server, &clock);
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
    assert_eq!(server.seen.len(), 3, "{:?}", server.seen);
}

#[test]
fn a_401_without_the_invalid_token_challenge_is_not_replayed() {
    let clock = clock();
    let mut ledger = jwt_ledger(&clock);
    let mut server = KeyRecorder {
        replies: VecDeque::from([Reply::json(401, r#"{"detail":"Invalid API key"}"#)]),
        seen: Vec::new(),
    };
    let op = get_info(&mut ledger);
    let (result, _) = run_one(op, &mut ledger, &mut server, &clock);
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Authentication);
    assert_eq!(server.seen.len(), 1);
}

#[test]
fn a_failed_exchange_surfaces_the_original_rejection_and_releases_waiters() {
    let clock = clock();
    let mut ledger = jwt_ledger(&clock);
    let mut server = KeyRecorder {
        replies: VecDeque::from([rejected(), Reply::json(403, r#"{"detail":"key revoked"}"#)]),
        seen: Vec::new(),
    };
    let op = get_info(&mut ledger);
    let (result, _) = run_one(op, &mut ledger, &mut server, &clock);
    let e = result.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    // Nobody is left waiting for an exchange that will not come.
    assert!(!ledger.jwt().unwrap().is_exchanging());
}
