//! What the agent's relay URL and the relay's webhook URLs ask of their
//! authority, checked one way for both.

use rustls::pki_types::ServerName;
use tungstenite::http::Uri;

/// Whether the URL carries `user:password@`: likely a secret, so callers
/// refuse it before any message could repeat the URL.
pub(crate) fn has_credentials(text: &str) -> bool {
    let after_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
    after_scheme
        .split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

/// Why an authority is not one to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthorityError {
    /// No host, or `[]`.
    NoHost,
    /// Neither a DNS name nor an IP address (which the `http` crate's
    /// lenient parser lets through).
    BadHost,
    /// A port that is not a number from 1 to 65535.
    BadPort,
}

/// A URL's host and port, checked.
pub(crate) struct Authority<'a> {
    /// Without brackets, as a socket address takes an IPv6 address.
    pub host: &'a str,
    /// What a TLS connection would be asked to verify; checked for plain
    /// URLs too, so that a typo fails at start and not at every connection.
    pub server_name: ServerName<'static>,
    /// `None` when the URL gives none: the scheme's default.
    pub port: Option<u16>,
}

pub(crate) fn authority(uri: &Uri) -> Result<Authority<'_>, AuthorityError> {
    let host = uri
        .host()
        .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
        .filter(|host| !host.is_empty())
        .ok_or(AuthorityError::NoHost)?;
    let server_name = ServerName::try_from(host)
        .map_err(|_| AuthorityError::BadHost)?
        .to_owned();
    // `Uri::port_u16` is `None` for a port that does not parse, which
    // would quietly become the default.
    let text = uri.authority().map_or("", |a| a.as_str());
    let port = match text.rsplit_once(':') {
        Some((_, port)) if !port.is_empty() && !port.contains(']') => Some(
            port.parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or(AuthorityError::BadPort)?,
        ),
        _ => None,
    };
    Ok(Authority {
        host,
        server_name,
        port,
    })
}
