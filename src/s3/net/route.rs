//! Which way a destination's requests go: through its HTTP proxy (`proxy`, or the
//! environment as curl reads it) or directly (`no_proxy`, loopback), decided for every
//! connection. The config room reads the settings into a [`Network`]; this decides.
//!
//! Proxy credentials are a [`Secret`]: a proxy prints as `http://host:port`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::s3::Secret;

/// How a destination's requests reach the network.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// For `https://` endpoints.
    pub https_proxy: Option<Proxy>,
    /// For `http://` endpoints.
    pub http_proxy: Option<Proxy>,
    /// Hosts reached directly, proxy or not.
    pub no_proxy: NoProxy,
    /// A PEM bundle of CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Proxy variables of the environment that cannot be used, and why: they are ignored
    /// (requests go direct, as before s3spool read them), and said at start and in `check`.
    pub ignored: Vec<String>,
}

impl Network {
    /// The proxy a request to `host` over `scheme` goes through, if any. Loopback is
    /// always reached directly: a plain-http endpoint is allowed there because its data
    /// never leaves the host, which a proxy elsewhere would undo.
    pub fn proxy_for(&self, scheme: &str, host: &str) -> Option<&Proxy> {
        let proxy = match scheme {
            "http" => self.http_proxy.as_ref(),
            _ => self.https_proxy.as_ref(),
        }?;
        (!self.no_proxy.matches(host) && !is_loopback(host)).then_some(proxy)
    }

    /// The proxy requests to `url` go through, if any (for `check` and the log).
    pub fn route(&self, url: &str) -> Option<&Proxy> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
        let authority = rest.split('/').next().unwrap_or_default();
        self.proxy_for(scheme, host_of(authority))
    }
}

/// The host of `host[:port]` (an IPv6 address without its brackets).
pub fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// `localhost`, or an address of the loopback network (IPv6 with or without brackets).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            ip => ip.is_loopback(),
        })
}

/// A proxy and where it was configured (`proxy`, `HTTPS_PROXY`, …), for `check` and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub url: ProxyUrl,
    pub source: &'static str,
}

/// `http://[user:password@]host[:port]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// A name, an IPv4 address or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

impl ProxyUrl {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Never the credentials: they are a secret.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Hosts that bypass the proxy, by curl's rules: `*` for every host; a name matches itself
/// and its subdomains (a leading dot changes nothing); an address or a CIDR range matches
/// addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    every_host: bool,
    names: Vec<String>,
    ranges: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    /// Entries separated by commas or white space.
    pub fn parse(text: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in text.split([',', ' ', '\t', '\n']).filter(|e| !e.is_empty()) {
            let entry = entry.to_ascii_lowercase();
            if entry == "*" {
                no_proxy.every_host = true;
                continue;
            }
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (entry.as_str(), None),
            };
            let unbracketed = address.trim_start_matches('[').trim_end_matches(']');
            // `[v6]:port` and `v4:port`: the port is ignored, as curl does.
            let address = match address.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default(),
                None if unbracketed.matches(':').count() == 1 => {
                    unbracketed.split(':').next().unwrap_or_default()
                }
                None => unbracketed,
            };
            if let Ok(ip) = address.parse::<IpAddr>() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                // A malformed range matches nothing rather than more than meant.
                match bits.map(|b| b.parse::<u8>().ok().filter(|b| *b <= max)) {
                    None => no_proxy.ranges.push((ip, max)),
                    Some(Some(bits)) => no_proxy.ranges.push((ip, bits)),
                    Some(None) => {}
                }
                continue;
            }
            let name = address.trim_start_matches("*.").trim_start_matches('.');
            let name = name.trim_end_matches('.');
            if !name.is_empty() {
                no_proxy.names.push(name.to_string());
            }
        }
        no_proxy
    }

    /// Whether requests to `host` (a name or an address, IPv6 with or without brackets)
    /// bypass the proxy.
    pub fn matches(&self, host: &str) -> bool {
        if self.every_host {
            return true;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .ranges
                .iter()
                .any(|(range, bits)| in_range(ip, *range, *bits));
        }
        self.names.iter().any(|name| {
            host == *name
                || host
                    .strip_suffix(name.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

fn in_range(ip: IpAddr, range: IpAddr, bits: u8) -> bool {
    match (ip, range) {
        (IpAddr::V4(ip), IpAddr::V4(range)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(range) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(range)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(range) & mask
        }
        _ => false,
    }
}
