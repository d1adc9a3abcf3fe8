//! When to exchange the API key for a JWT, and when to refresh it (protocol.md 2.3, SDK 0.38).

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;

use super::claims::{decode_claims, JwtClaims};
use crate::rng::Rng;
use crate::Error;

/// Timing constants of the JWT schedule (SDK 0.38 values by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JwtSchedule {
    /// Background refresh happens after `lifetime × U(low, high)` (0.45–0.55: half-life ± 10 %).
    pub refresh_fraction: (f64, f64),
    /// Wait after a failed background exchange (60 s).
    pub retry_after_failure: Duration,
    /// A request finding this little time left refreshes first (60 s).
    pub on_demand_margin: Duration,
    /// A 401 from the exchange stops the background loop once the token has this little left
    /// (~120 s).
    pub stop_margin: Duration,
}

impl Default for JwtSchedule {
    fn default() -> JwtSchedule {
        JwtSchedule {
            refresh_fraction: (0.45, 0.55),
            retry_after_failure: Duration::from_secs(60),
            on_demand_margin: Duration::from_secs(60),
            stop_margin: Duration::from_secs(120),
        }
    }
}

/// What a request needs before it can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialNeed<'a> {
    /// Send with this JWT.
    Ready(&'a str),
    /// Exchange first (no token yet, or ≤ 60 s left): call [`JwtState::begin_exchange`], send
    /// `POST /api/v1/auth/token`, feed the result back.
    Exchange,
    /// Another request's exchange is in flight: wait for the ledger to change.
    WaitForExchange,
}

/// What the background refresher does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundRefresh {
    /// Exchange now.
    Exchange,
    /// Sleep until then.
    WaitUntil(Instant),
    /// Nothing to do until a first token exists or the running exchange finishes (0.38 exchanges
    /// lazily, on the first request that needs a token).
    Idle,
    /// The loop stopped (a 401 close to expiry); on-demand exchanges still work.
    Stopped,
}

/// What requests that waited for a failed exchange do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeFallback {
    /// Go on with the cached token, which has not expired.
    UseCached,
    /// Fail with the exchange's error (no usable token, or the exchange answered 401).
    Fail,
}

/// What to do after a request was rejected with `WWW-Authenticate: Bearer error="invalid_token"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidTokenAction {
    /// First rejection of this token: exchange a new one, then replay the request once.
    ExchangeThenReplay,
    /// Another request already replaced the token: replay with the current one.
    ReplayWithCurrent,
    /// The exchange for this rejection is in flight: wait, then replay.
    WaitForExchange,
    /// This token was already rejected and could not be replaced: fail the request.
    Fail,
}

struct Token {
    jwt: String,
    claims: JwtClaims,
    expires_at: Instant,
}

/// The JWT of one client: which token to send, when to exchange, when to refresh in the
/// background. Lives in the shared ledger; the request a call sends carries the token string it
/// used, so a rejection can be matched to it. A request replays at most once after a rejection;
/// that flag belongs to the call machine.
///
/// `Debug` never prints the token.
///
/// ```
/// use std::time::{Duration, Instant, SystemTime};
/// use base64::Engine as _;
/// use tinker_core::auth::{BackgroundRefresh, CredentialNeed, JwtState};
/// use tinker_core::rng::Rng;
///
/// # #[allow(clippy::disallowed_methods)]
/// let (now, unix) = (Instant::now(), SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
/// let mut jwt = JwtState::default();
/// assert_eq!(jwt.credential(now), CredentialNeed::Exchange);
/// jwt.begin_exchange();
/// let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
///     .encode(br#"{"iat":1000000,"exp":1003600}"#);
/// jwt.on_exchange_ok(format!("h.{payload}.s"), now, unix, &mut Rng::from_seed(1)).unwrap();
/// assert!(matches!(jwt.credential(now), CredentialNeed::Ready(_)));
/// // Refresh at 45-55 % of the one-hour lifetime.
/// let BackgroundRefresh::WaitUntil(at) = jwt.poll_background(now) else { panic!() };
/// assert!(at >= now + Duration::from_secs(1620) && at <= now + Duration::from_secs(1980));
/// ```
pub struct JwtState {
    schedule: JwtSchedule,
    token: Option<Token>,
    refresh_at: Option<Instant>,
    exchanging: bool,
    stopped: bool,
    rejected: Option<String>,
}

impl fmt::Debug for JwtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtState")
            .field("has_token", &self.token.is_some())
            .field("expires_at", &self.token.as_ref().map(|t| t.expires_at))
            .field("refresh_at", &self.refresh_at)
            .field("exchanging", &self.exchanging)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Default for JwtState {
    fn default() -> JwtState {
        JwtState::new(JwtSchedule::default())
    }
}

impl JwtState {
    /// No token yet.
    pub fn new(schedule: JwtSchedule) -> JwtState {
        JwtState {
            schedule,
            token: None,
            refresh_at: None,
            exchanging: false,
            stopped: false,
            rejected: None,
        }
    }

    /// The claims of the current token.
    pub fn claims(&self) -> Option<&JwtClaims> {
        self.token.as_ref().map(|t| &t.claims)
    }

    /// When the current token expires.
    pub fn expires_at(&self) -> Option<Instant> {
        self.token.as_ref().map(|t| t.expires_at)
    }

    /// Whether an exchange is in flight.
    pub fn is_exchanging(&self) -> bool {
        self.exchanging
    }

    /// What a request about to be sent at `now` needs.
    pub fn credential(&self, now: Instant) -> CredentialNeed<'_> {
        let fresh = self.token.as_ref().filter(|t| {
            t.expires_at.saturating_duration_since(now) > self.schedule.on_demand_margin
        });
        match (fresh, self.exchanging) {
            (Some(t), _) => CredentialNeed::Ready(&t.jwt),
            (None, true) => CredentialNeed::WaitForExchange,
            (None, false) => CredentialNeed::Exchange,
        }
    }

    /// The background refresher's next step.
    pub fn poll_background(&self, now: Instant) -> BackgroundRefresh {
        if self.stopped {
            return BackgroundRefresh::Stopped;
        }
        match (self.exchanging, self.refresh_at) {
            (true, _) | (false, None) => BackgroundRefresh::Idle,
            (false, Some(at)) if now >= at => BackgroundRefresh::Exchange,
            (false, Some(at)) => BackgroundRefresh::WaitUntil(at),
        }
    }

    /// An exchange request is about to be sent (concurrent requests now wait for it).
    pub fn begin_exchange(&mut self) {
        self.exchanging = true;
    }

    /// The exchange was abandoned before it answered (its caller gave up): waiters go on, and
    /// the next request that needs a token exchanges again.
    pub fn abort_exchange(&mut self) {
        self.exchanging = false;
    }

    /// The exchange answered `{"jwt": …}` at `now` (`now_unix` is the wall clock at that
    /// moment). Schedules the background refresh after `lifetime × U(0.45, 0.55)`.
    /// A token whose payload cannot be decoded is an error and leaves the previous token in place.
    pub fn on_exchange_ok(
        &mut self,
        jwt: String,
        now: Instant,
        now_unix: SystemTime,
        rng: &mut Rng,
    ) -> Result<(), Error> {
        self.exchanging = false;
        let claims = decode_claims(&jwt)?;
        let lifetime = claims.lifetime(now_unix);
        let (low, high) = self.schedule.refresh_fraction;
        let fraction = rng.uniform(low, high);
        self.refresh_at = Some(now + lifetime.mul_f64(fraction));
        let expires_at = now + claims.remaining(now_unix);
        self.token = Some(Token {
            jwt,
            claims,
            expires_at,
        });
        Ok(())
    }

    /// The exchange failed at `now`; `unauthorized` = it answered 401. Schedules the next
    /// background attempt 60 s later, or stops the loop on a 401 once the token has ≤ 120 s left.
    /// Returns what requests waiting for this exchange should do.
    pub fn on_exchange_failed(&mut self, now: Instant, unauthorized: bool) -> ExchangeFallback {
        self.exchanging = false;
        let left = self.token.as_ref().map_or(Duration::ZERO, |t| {
            t.expires_at.saturating_duration_since(now)
        });
        if unauthorized && left <= self.schedule.stop_margin {
            self.stopped = true;
        }
        if self.token.is_some() {
            self.refresh_at = Some(now + self.schedule.retry_after_failure);
        }
        if !unauthorized && left > Duration::ZERO {
            ExchangeFallback::UseCached
        } else {
            ExchangeFallback::Fail
        }
    }

    /// A request sent with `rejected_jwt` got a 401 carrying an `invalid_token` challenge
    /// (see [`is_invalid_token_challenge`]). One exchange per rejected token, shared by every
    /// request that used it.
    pub fn on_invalid_token(&mut self, rejected_jwt: &str) -> InvalidTokenAction {
        let current = self.token.as_ref().map(|t| t.jwt.as_str());
        if current.is_some_and(|c| c != rejected_jwt) {
            return InvalidTokenAction::ReplayWithCurrent;
        }
        if self.rejected.as_deref() == Some(rejected_jwt) {
            return if self.exchanging {
                InvalidTokenAction::WaitForExchange
            } else {
                InvalidTokenAction::Fail
            };
        }
        self.rejected = Some(rejected_jwt.to_owned());
        if self.exchanging {
            InvalidTokenAction::WaitForExchange
        } else {
            InvalidTokenAction::ExchangeThenReplay
        }
    }
}

/// Whether a 401's `WWW-Authenticate` says the bearer token itself was rejected
/// (`Bearer error="invalid_token"`, quoted or not, any case for the scheme).
pub fn is_invalid_token_challenge(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            let value = value.trim();
            let Some((scheme, params)) = value.split_once(char::is_whitespace) else {
                return false;
            };
            scheme.eq_ignore_ascii_case("bearer")
                && params.split(',').any(|param| {
                    param.split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("error")
                            && v.trim().trim_matches('"') == "invalid_token"
                    })
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::make_token;

    struct Clock {
        t0: Instant,
        unix0: SystemTime,
    }

    impl Clock {
        fn new() -> Clock {
            #[allow(clippy::disallowed_methods)]
            let t0 = Instant::now();
            Clock {
                t0,
                unix0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            }
        }
        fn at(&self, s: u64) -> (Instant, SystemTime) {
            (
                self.t0 + Duration::from_secs(s),
                self.unix0 + Duration::from_secs(s),
            )
        }
        /// A token issued at `issued` (seconds on this clock) living `lifetime` seconds.
        fn token(&self, issued: u64, lifetime: u64) -> String {
            let iat = 1_000_000 + issued;
            make_token(&format!(r#"{{"iat":{iat},"exp":{}}}"#, iat + lifetime))
        }
    }

    #[test]
    fn first_request_exchanges_lazily_and_others_wait_for_it() {
        let c = Clock::new();
        let mut jwt = JwtState::default();
        assert_eq!(jwt.poll_background(c.at(0).0), BackgroundRefresh::Idle);
        assert_eq!(jwt.credential(c.at(0).0), CredentialNeed::Exchange);
        jwt.begin_exchange();
        assert_eq!(jwt.credential(c.at(0).0), CredentialNeed::WaitForExchange);
        let (now, unix) = c.at(1);
        let token = c.token(1, 3600);
        jwt.on_exchange_ok(token.clone(), now, unix, &mut Rng::from_seed(3))
            .unwrap();
        assert_eq!(jwt.credential(now), CredentialNeed::Ready(&token));
        assert_eq!(jwt.expires_at(), Some(c.at(3601).0));
    }

    #[test]
    fn background_refresh_lands_between_45_and_55_percent_and_is_seeded() {
        let c = Clock::new();
        let schedule = |seed| {
            let mut jwt = JwtState::default();
            let (now, unix) = c.at(0);
            jwt.on_exchange_ok(c.token(0, 1000), now, unix, &mut Rng::from_seed(seed))
                .unwrap();
            match jwt.poll_background(now) {
                BackgroundRefresh::WaitUntil(at) => at - c.t0,
                other => panic!("{other:?}"),
            }
        };
        for seed in 0..50 {
            let d = schedule(seed);
            assert!(
                d >= Duration::from_secs(450) && d < Duration::from_secs(550),
                "{d:?}"
            );
        }
        assert_eq!(schedule(7), schedule(7));
    }

    #[test]
    fn a_request_with_a_minute_left_refreshes_first_and_falls_back_to_the_cached_token() {
        let c = Clock::new();
        let mut jwt = JwtState::default();
        let (t, u) = c.at(0);
        jwt.on_exchange_ok(c.token(0, 600), t, u, &mut Rng::from_seed(1))
            .unwrap();
        assert!(matches!(
            jwt.credential(c.at(539).0),
            CredentialNeed::Ready(_)
        ));
        assert_eq!(jwt.credential(c.at(540).0), CredentialNeed::Exchange);
        jwt.begin_exchange();
        assert_eq!(
            jwt.on_exchange_failed(c.at(541).0, false),
            ExchangeFallback::UseCached
        );
        assert_eq!(
            jwt.poll_background(c.at(541).0),
            BackgroundRefresh::WaitUntil(c.at(601).0)
        );
        // Once the cached token has expired, a failed exchange fails the waiting requests.
        jwt.begin_exchange();
        assert_eq!(
            jwt.on_exchange_failed(c.at(600).0, false),
            ExchangeFallback::Fail
        );
    }

    #[test]
    fn a_401_from_the_exchange_fails_at_once_and_stops_the_loop_near_expiry() {
        let c = Clock::new();
        let mut jwt = JwtState::default();
        let (t, u) = c.at(0);
        jwt.on_exchange_ok(c.token(0, 1000), t, u, &mut Rng::from_seed(1))
            .unwrap();
        jwt.begin_exchange();
        assert_eq!(
            jwt.on_exchange_failed(c.at(500).0, true),
            ExchangeFallback::Fail
        );
        assert_eq!(
            jwt.poll_background(c.at(500).0),
            BackgroundRefresh::WaitUntil(c.at(560).0),
            "500 s left: keep retrying every 60 s"
        );
        jwt.begin_exchange();
        jwt.on_exchange_failed(c.at(880).0, true);
        assert_eq!(jwt.poll_background(c.at(900).0), BackgroundRefresh::Stopped);
    }

    #[test]
    fn an_invalid_token_rejection_triggers_one_exchange_shared_by_all_requests() {
        let c = Clock::new();
        let mut jwt = JwtState::default();
        let (t, u) = c.at(0);
        let old = c.token(0, 3600);
        jwt.on_exchange_ok(old.clone(), t, u, &mut Rng::from_seed(1))
            .unwrap();
        assert_eq!(
            jwt.on_invalid_token(&old),
            InvalidTokenAction::ExchangeThenReplay
        );
        jwt.begin_exchange();
        assert_eq!(
            jwt.on_invalid_token(&old),
            InvalidTokenAction::WaitForExchange
        );
        let (t, u) = c.at(5);
        jwt.on_exchange_ok(c.token(5, 3600), t, u, &mut Rng::from_seed(1))
            .unwrap();
        assert_eq!(
            jwt.on_invalid_token(&old),
            InvalidTokenAction::ReplayWithCurrent
        );

        // If the replacement cannot be obtained, the same token is not retried again.
        let mut stuck = JwtState::default();
        stuck
            .on_exchange_ok(old.clone(), c.at(0).0, c.at(0).1, &mut Rng::from_seed(1))
            .unwrap();
        assert_eq!(
            stuck.on_invalid_token(&old),
            InvalidTokenAction::ExchangeThenReplay
        );
        stuck.begin_exchange();
        stuck.on_exchange_failed(c.at(1).0, false);
        assert_eq!(stuck.on_invalid_token(&old), InvalidTokenAction::Fail);
    }

    #[test]
    fn challenges_are_recognised_in_their_usual_spellings() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::WWW_AUTHENTICATE, v.parse().unwrap());
            m
        };
        assert!(is_invalid_token_challenge(&h(
            r#"Bearer error="invalid_token""#
        )));
        assert!(is_invalid_token_challenge(&h(
            r#"bearer realm="tinker", error=invalid_token, error_description="expired""#
        )));
        assert!(!is_invalid_token_challenge(&h(
            r#"Bearer error="insufficient_scope""#
        )));
        assert!(!is_invalid_token_challenge(&h(r#"Basic realm="x""#)));
        assert!(!is_invalid_token_challenge(&HeaderMap::new()));
    }

    #[test]
    fn debug_output_never_contains_the_token() {
        let c = Clock::new();
        let mut jwt = JwtState::default();
        let token = c.token(0, 60);
        jwt.on_exchange_ok(token.clone(), c.at(0).0, c.at(0).1, &mut Rng::from_seed(1))
            .unwrap();
        let text = format!("{jwt:?}");
        assert!(
            !text.contains(&token) && !text.contains(token.split('.').nth(1).unwrap()),
            "{text}"
        );
    }
}
