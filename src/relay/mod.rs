//! `vstats-relay`: admits agents by token, keeps the registry, fans live
//! metrics out to dashboards. One thread, one epoll loop.

pub mod cli;
pub mod registry;
