//! The dashboard page: one self-contained file, nothing fetched elsewhere,
//! served by the relay itself (see `http::page_response`).

/// The page as written.
pub const DASHBOARD_PAGE: &str = include_str!("dashboard.html");
/// The same page, gzipped by build.rs, for clients that accept it.
pub const DASHBOARD_PAGE_GZIP: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dashboard.html.gz"));
