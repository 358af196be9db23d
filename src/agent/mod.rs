//! `vstats-agent`: sample the host, stream to the relay.

pub mod backoff;
pub mod collect;
pub mod config;
pub mod lean;
pub mod session;
