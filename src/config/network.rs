//! A destination's way through the network: the HTTP proxy its S3 and STS requests go
//! through and the hosts that bypass it (`proxy`, `no_proxy`, else the environment as curl
//! reads it), and the private CA certificates it trusts besides the system's (`ca_file`).
//!
//! Proxy credentials in a URL are a [`Secret`]: a proxy prints as `http://host:port`.

use std::path::Path;

use super::reader::{Problems, Section};
use super::{resolve, Secret};
pub use crate::s3::{host_of, is_loopback, Network, NoProxy, Proxy, ProxyUrl};

/// curl's default proxy port.
const DEFAULT_PROXY_PORT: u16 = 1080;

/// A proxy URL as an operator writes it; errors never repeat a password.
pub fn parse_proxy_url(text: &str) -> Result<ProxyUrl, String> {
    let shown = mask_credentials(text.trim());
    let text = text.trim().trim_end_matches('/');
    let is_scheme = |scheme: &str| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    };
    let rest = match text.split_once("://").filter(|(scheme, _)| is_scheme(scheme)) {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => rest,
            "https" => {
                return Err(format!(
                    "{shown:?}: TLS to the proxy (https://) is not supported; use http://HOST:PORT (requests to https endpoints stay encrypted inside its CONNECT tunnel)"
                ))
            }
            other => {
                return Err(format!(
                    "{shown:?}: {other}:// proxies are not supported; use an HTTP proxy, http://HOST:PORT"
                ))
            }
        },
        None => text,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{shown:?} is not a proxy URL like \"http://proxy.example:3128\""
        ));
    }
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, rest),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{shown:?}: an IPv6 address needs its closing ]"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{shown:?}: [{host}] is not an IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| {
                        format!("{shown:?}: only :PORT may follow the ] of an IPv6 address")
                    })?),
                ),
            }
        }
        None if hostport.matches(':').count() > 1 => {
            return Err(format!(
                "{shown:?}: write an IPv6 address in brackets, like http://[::1]:3128"
            ))
        }
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{shown:?}: the port must be a number from 1 to 65535"))?,
        None => DEFAULT_PROXY_PORT,
    };
    let name_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || !host.chars().all(name_chars) {
        return Err(format!(
            "{shown:?}: the proxy's host is missing or malformed"
        ));
    }
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password).filter(|p| !p.is_empty())),
                None => (userinfo, None),
            };
            (
                Some(percent_decode(user)),
                password.map(|p| Secret::new(percent_decode(p))),
            )
        }
    };
    Ok(ProxyUrl {
        host: host.to_ascii_lowercase(),
        port,
        user,
        password,
    })
}

/// `http://user:password@host` → `http://***@host`: everything before the last `@` but a
/// leading scheme is hidden. Without an `@`, a value that may still hold a password (a
/// `user:password` whose `@` was forgotten: a second `:`, or a "port" that is no port)
/// is not shown past its scheme.
fn mask_credentials(text: &str) -> String {
    let scheme_of = |before: &str| match before.split_once("://") {
        Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("{scheme}://")
        }
        _ => String::new(),
    };
    if let Some((before, host)) = text.rsplit_once('@') {
        return format!("{}***@{host}", scheme_of(before));
    }
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // An IPv6 address in brackets has colons of its own.
    let outside = match authority.rsplit_once(']') {
        Some((_, after)) => after,
        None => authority,
    };
    let suspicious = match outside.split_once(':') {
        None => false,
        // A "port" past 65535 is a numeric password (`http://ops:123456`).
        Some((_, port)) => port.parse::<u16>().is_err(),
    };
    if suspicious {
        format!("{}*** (not shown: it may hold a password)", scheme_of(text))
    } else {
        text.to_string()
    }
}

/// `%40` → `@`; anything that is not a valid escape stays as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The variables a proxy for `scheme` is read from, in curl's order (lower case first).
fn proxy_variables(scheme: &str) -> [&'static str; 4] {
    match scheme {
        "http" => ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"],
        _ => ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
    }
}

/// Reads `proxy`, `no_proxy` and `ca_file` from a destination's table; without `proxy`,
/// the proxy comes from the environment (`env` looks a variable up). `inline_secret` is
/// set when the config holds a proxy password (the file must then be private).
pub(super) fn parse(
    p: &mut Problems,
    s: &mut Section<'_>,
    base: &Path,
    check_files: bool,
    env: &dyn Fn(&str) -> Option<String>,
    inline_secret: &mut bool,
) -> Network {
    let proxy = s.string(p, "proxy");
    let no_proxy = s.string(p, "no_proxy");
    let ca_file = s.string(p, "ca_file");
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut network = Network {
        no_proxy: NoProxy::parse(&match (proxy, no_proxy) {
            (_, Some(list)) => list.to_string(),
            // A destination's own proxy comes with its own exceptions, or none.
            (Some(_), None) => String::new(),
            (None, None) => env("no_proxy")
                .or_else(|| env("NO_PROXY"))
                .unwrap_or_default(),
        }),
        ..Network::default()
    };
    match proxy.map(str::trim) {
        Some(none) if none.is_empty() || none.eq_ignore_ascii_case("none") => {}
        Some(url) => match parse_proxy_url(url) {
            Ok(url) => {
                *inline_secret |= url.password.is_some();
                let proxy = Proxy {
                    url,
                    source: "proxy",
                };
                network.https_proxy = Some(proxy.clone());
                network.http_proxy = Some(proxy);
            }
            Err(e) => p.add(s.key("proxy"), e),
        },
        None => {
            for scheme in ["https", "http"] {
                let found = proxy_variables(scheme)
                    .into_iter()
                    .find_map(|name| env(name).map(|value| (name, value)));
                let Some((name, value)) = found else { continue };
                match parse_proxy_url(&value) {
                    Ok(url) => {
                        let proxy = Some(Proxy { url, source: name });
                        match scheme {
                            "https" => network.https_proxy = proxy,
                            _ => network.http_proxy = proxy,
                        }
                    }
                    // Requests went direct before s3spool read these variables: a value
                    // meant for another tool (socks5://, TLS to the proxy) must not stop
                    // the daemon, but it is said.
                    Err(e) => network.ignored.push(format!(
                        "the environment's {name} is ignored for {scheme}:// endpoints (requests go direct): {e}; set proxy for this destination to choose"
                    )),
                }
            }
        }
    }
    if let Some(file) = ca_file {
        let path = resolve(base, file);
        if check_files {
            if let Err(e) = check_ca_file(&path) {
                p.add(s.key("ca_file"), e);
            }
        }
        network.ca_file = Some(path);
    }
    network
}

/// A readable PEM bundle with at least one certificate. The TLS library would ignore a
/// bundle it cannot use, and the error would only come at the first request.
fn check_ca_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&text).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA's certificates in PEM form",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_read_as_curl_reads_them() {
        let url = parse_proxy_url("http://ops:p%40ss@Proxy.Corp:3128/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.user.as_deref()),
            ("proxy.corp", 3128, Some("ops"))
        );
        assert_eq!(url.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(url.to_string(), "http://proxy.corp:3128");
        assert_eq!(format!("{url:?}"), "http://proxy.corp:3128");
        let bare = parse_proxy_url("10.0.0.1").unwrap();
        assert_eq!((bare.host.as_str(), bare.port), ("10.0.0.1", 1080));
        let v6 = parse_proxy_url("http://[::1]:8080").unwrap();
        assert_eq!(v6.authority(), "[::1]:8080");
        for bad in [
            "https://u:hunter2@proxy:3128",
            "socks5://u:hunter2@proxy:1080",
            "http://u:hunter2@proxy:99999",
            "http://u:hunter2@proxy:3128/path",
            "http://u:hunter2@:3128",
        ] {
            let e = parse_proxy_url(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("***@proxy") || e.contains("***@:3128"), "{e}");
        }
        for bad in [
            "http://[::1]8080",
            "http://::1",
            "http://[nope]:1",
            "u:pa://ss@p:1/x",
        ] {
            let e = parse_proxy_url(bad).unwrap_err();
            assert!(!e.contains("pa:") && !e.contains("ss@"), "{e}");
        }
        let no_password = parse_proxy_url("http://ops@proxy:3128").unwrap();
        assert_eq!(no_password.user.as_deref(), Some("ops"));
        assert!(no_password.password.is_none(), "a user alone is no secret");
    }

    #[test]
    fn no_proxy_matches_names_subdomains_addresses_and_ranges() {
        let n = NoProxy::parse(".corp.example, localhost 10.0.0.0/8,[::1], *.internal");
        for host in [
            "corp.example",
            "s3.corp.example",
            "LOCALHOST",
            "10.1.2.3",
            "::1",
            "[::1]",
            "minio.internal",
        ] {
            assert!(n.matches(host), "{host} bypasses");
        }
        for host in ["notcorp.example", "s3.amazonaws.com", "11.0.0.1", "::2"] {
            assert!(!n.matches(host), "{host} goes through the proxy");
        }
        assert!(NoProxy::parse("*").matches("anything.example"));
        let ports =
            NoProxy::parse("minio.lan:9000,10.0.0.1:9000,[::2]:9000,10.9.0.0/abc,10.8.0.0/99");
        assert!(ports.matches("minio.lan") && ports.matches("10.0.0.1") && ports.matches("::2"));
        assert!(
            !ports.matches("10.9.0.1") && !ports.matches("10.8.0.0"),
            "malformed ranges match nothing"
        );
        assert!(!NoProxy::parse("").matches("localhost"));
    }

    fn parsed(table: &str, env: &[(&str, &str)]) -> (Network, Vec<String>, bool) {
        let table: toml::Table = toml::from_str(table).unwrap();
        let mut p = Problems::default();
        let mut s = Section::new("destinations.lake", &table);
        let mut secret = false;
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let network = parse(
            &mut p,
            &mut s,
            Path::new("/etc/s3spool"),
            true,
            &lookup,
            &mut secret,
        );
        s.finish(&mut p);
        (
            network,
            p.0.iter()
                .map(|e| format!("{}: {}", e.key, e.message))
                .collect(),
            secret,
        )
    }

    #[test]
    fn the_environment_is_read_lower_case_first_and_a_destination_overrides_it() {
        let env = [
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("HTTP_PROXY", "http://plain:8080"),
            ("NO_PROXY", "minio.lan"),
        ];
        let (n, problems, _) = parsed("", &env);
        assert!(problems.is_empty(), "{problems:?}");
        let https = n.proxy_for("https", "s3.amazonaws.com").unwrap();
        assert_eq!(
            (https.url.host.as_str(), https.source),
            ("lower", "https_proxy")
        );
        let http = n.proxy_for("http", "s3.amazonaws.com").unwrap();
        assert_eq!(
            (http.url.host.as_str(), http.source),
            ("plain", "HTTP_PROXY")
        );
        assert!(n.proxy_for("https", "minio.lan").is_none());
        assert_eq!(n.route("http://minio.lan:9000"), None, "NO_PROXY bypasses");

        let (own, _, secret) = parsed("proxy = \"http://u:pw@mine:3128\"", &env);
        assert!(secret, "a password in the config makes it secret");
        let proxy = own.proxy_for("https", "minio.lan").unwrap();
        assert_eq!((proxy.url.host.as_str(), proxy.source), ("mine", "proxy"));
        let (direct, _, _) = parsed("proxy = \"NONE\"", &env);
        assert!(direct.proxy_for("https", "s3.amazonaws.com").is_none());
        for loopback in ["127.0.0.1", "localhost", "[::1]", "127.1.2.3"] {
            assert!(
                own.proxy_for("http", loopback).is_none(),
                "{loopback} is reached directly"
            );
        }
        let (listed, _, _) = parsed("no_proxy = \"amazonaws.com\"", &env);
        assert!(listed.proxy_for("https", "s3.amazonaws.com").is_none());
        assert!(listed.proxy_for("https", "minio.lan").is_some());
    }

    #[test]
    fn bad_values_name_their_key_or_variable_and_never_the_password() {
        let (n, problems, _) = parsed("", &[("ALL_PROXY", "socks5://u:hunter2@p:1")]);
        assert!(
            problems.is_empty(),
            "another tool's proxy does not stop the daemon"
        );
        assert!(n.https_proxy.is_none() && n.http_proxy.is_none());
        assert_eq!(n.ignored.len(), 2, "{:?}", n.ignored);
        assert!(n.ignored[0]
            .starts_with("the environment's ALL_PROXY is ignored for https:// endpoints"));
        assert!(!n.ignored[0].contains("hunter2"));
        // A password whose @ was forgotten is not echoed either.
        for value in [
            "http://ops:hunter2",
            "http://ops:hunter2proxy:3128",
            "ops:hunter2:3128",
            "http://ops:1234567",
            "http://ops:",
        ] {
            let (_, problems, _) = parsed(&format!("proxy = {value:?}"), &[]);
            assert!(!problems.is_empty(), "{value}");
            assert!(!problems[0].contains("hunter2"), "{problems:?}");
            assert!(problems[0].contains("not shown"), "{problems:?}");
        }
        let (_, problems, _) = parsed("proxy = \"http://proxy:31x8\"", &[]);
        assert!(!problems[0].contains("31x8"), "{problems:?}");
        let (_, problems, _) = parsed("proxy = \"https://u:hunter2@p:1\"", &[]);
        assert!(
            problems[0]
                .starts_with("destinations.lake.proxy: \"https://***@p:1\": TLS to the proxy"),
            "{problems:?}"
        );
        let (_, problems, _) = parsed("ca_file = \"no-such-ca.pem\"", &[]);
        assert!(
            problems[0]
                .starts_with("destinations.lake.ca_file: cannot read /etc/s3spool/no-such-ca.pem"),
            "{problems:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let (_, problems, _) = parsed(&format!("ca_file = {:?}", empty.display().to_string()), &[]);
        assert!(
            problems[0].contains("holds no PEM certificate"),
            "{problems:?}"
        );
    }
}
