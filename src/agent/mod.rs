//! `vstats-agent`: sample the host, stream to the relay (or a vStats server).

pub mod backoff;
pub mod collect;
pub mod config;
pub mod fit;
pub mod lean;
pub mod session;
#[cfg(feature = "vstats-compat")]
pub mod vstats_wire;
