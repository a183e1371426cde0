//! Personal data in logs: masking helpers and the line scrubber.
//!
//! Rule: logs name users by id. When a line must mention personal data (a failed login names
//! the account tried), it uses a masked form: [`mask_email`] keeps the first character and the
//! domain, [`mask_ip`] keeps the network (IPv4 /24, IPv6 /48). Passwords and tokens are never
//! logged at all.
//!
//! [`Scrubber`] is the second line of defence, wrapped around the log writer: every formatted
//! line has anything shaped like an email address or a JWT replaced before it is written, so a
//! value that slipped into an error message (a database's "duplicate key (email)=(…)" detail,
//! say) still does not reach the log in clear.

use std::{
    io::{self, Write},
    net::IpAddr,
    sync::Arc,
};

use regex::Regex;
use tracing_subscriber::fmt::MakeWriter;

/// `alice@example.com` → `a***@example.com`; something without `@` → `***`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// `203.0.113.7` → `203.0.113.0/24`; IPv6 addresses keep their first 48 bits.
pub fn mask_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

#[derive(Debug)]
struct Patterns {
    email: Regex,
    jwt: Regex,
}

/// A log writer that replaces email addresses with `<email>` and JWTs with `<token>`.
#[derive(Debug, Clone)]
pub struct Scrubber {
    patterns: Arc<Patterns>,
}

impl Scrubber {
    /// A scrubber writing to standard error.
    ///
    /// # Panics
    /// Never: the patterns are constants, checked by the unit tests.
    #[allow(clippy::expect_used)]
    pub fn stderr() -> Self {
        Self {
            patterns: Arc::new(Patterns {
                email: Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
                    .expect("constant email pattern"),
                jwt: Regex::new(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
                    .expect("constant token pattern"),
            }),
        }
    }

    /// `line` with personal data replaced.
    pub fn scrub<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        let line = self.patterns.jwt.replace_all(line, "<token>");
        match self.patterns.email.replace_all(&line, "<email>") {
            std::borrow::Cow::Borrowed(_) => line,
            std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s),
        }
    }
}

/// One event's writer: the formatter writes a whole line per `write` call.
#[derive(Debug)]
pub struct ScrubbedStderr {
    scrubber: Scrubber,
}

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr().write_all(self.scrubber.scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Scrubber {
    type Writer = ScrubbedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedStderr {
            scrubber: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_and_addresses() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("nobody"), "***");
        assert_eq!(mask_ip("203.0.113.7".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(
            mask_ip("2001:db8:1:2::7".parse().unwrap()),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn scrubs_emails_and_tokens_from_lines() {
        let s = Scrubber::stderr();
        let line = "duplicate key (email)=(bob.smith+x@mail.example.org) token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end";
        let out = s.scrub(line);
        assert!(!out.contains("bob.smith"), "{out}");
        assert!(!out.contains("eyJ"), "{out}");
        assert!(out.contains("<email>") && out.contains("<token>") && out.ends_with("end"));
        assert!(matches!(
            s.scrub("order 42 paid"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
