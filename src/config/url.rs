//! Provider base URLs: `http(s)://host[:port][/path]`, checked once at load.
//!
//! Only what an upstream needs: scheme, host, port and a path prefix. Query
//! strings, fragments and credentials in a base URL are rejected, because the
//! gateway would otherwise have to decide how to merge them with the client's.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" or "/openai").
    pub path_prefix: String,
    /// Value for the `Host` header: host, plus `:port` when not the default.
    pub host_header: String,
}

impl UpstreamUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(format!("`{text}` must start with http:// or https://"));
        };
        if rest.contains(['?', '#', '@']) {
            return Err(format!("`{text}`: query, fragment or credentials are not allowed in a base URL"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = split_host_port(authority, default_port).map_err(|e| format!("`{text}`: {e}"))?;
        if host.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        let path_prefix = path.trim_end_matches('/').to_string();
        if path_prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("`{text}`: path has spaces or control characters"));
        }
        let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let host_header = if port == default_port { bracketed } else { format!("{bracketed}:{port}") };
        Ok(Self { scheme, host, port, path_prefix, host_header })
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[` in IPv6 host")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => default_port,
            None => return Err("junk after IPv6 host".into()),
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), parse_port(port)?)),
        None => Ok((authority.to_string(), default_port)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>().ok().filter(|&n| n != 0).ok_or_else(|| format!("invalid port `{p}`"))
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.host_header, self.path_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let u = UpstreamUrl::parse("https://api.openai.com").expect("valid");
        assert_eq!((u.host.as_str(), u.port, u.path_prefix.as_str()), ("api.openai.com", 443, ""));
        assert_eq!(u.host_header, "api.openai.com");
        let u = UpstreamUrl::parse("http://10.0.0.5:8000/").expect("valid");
        assert_eq!((u.port, u.host_header.as_str(), u.path_prefix.as_str()), (8000, "10.0.0.5:8000", ""));
        let u = UpstreamUrl::parse("http://[::1]:9000/proxy/openai/").expect("valid");
        assert_eq!((u.host.as_str(), u.port, u.path_prefix.as_str()), ("::1", 9000, "/proxy/openai"));
        assert_eq!(u.host_header, "[::1]:9000");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "api.openai.com",
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h/p?q=1",
            "http://user@h",
            "http://[::1",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
