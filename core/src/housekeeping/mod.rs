//! The background housekeeper of a session: heartbeats, dynamic-config refresh and telemetry
//! flushes, as one sans-IO machine (protocol.md 4.4, 4.5, 13).

mod housekeeper;
#[cfg(test)]
mod tests;

pub use housekeeper::{
    HeartbeatOutcome, Housekeeper, HousekeeperAction, HousekeeperConfig, HousekeeperWarning,
};
