//! Header rewriting at the proxy boundary: hop-by-hop removal (RFC 9110 §7.6.1, including
//! every header named in `Connection`) and the forwarding headers (`X-Forwarded-For/-Proto/
//! -Host`, RFC 7239 `Forwarded`, `Via`), believing a client's own forwarding headers only from
//! trusted proxies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Connection` first: [`strip_hop_by_hop`] reads its bit as "look for the names it lists".
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // Only meaningful with an h2c upgrade, which is never passed through.
    HeaderName::from_static("http2-settings"),
];

/// `te`'s bit in what [`hop_bit`] returns (after [`HOP_BY_HOP`]'s).
const TE_BIT: u16 = 1 << HOP_BY_HOP.len();

/// The bit of `n` in [`HOP_BY_HOP`] (bit i: `HOP_BY_HOP[i]`), [`TE_BIT`] for `te`, else 0. A
/// match on the name's text (its length first): a few instructions per header where comparing
/// it with each hop-by-hop name cost nine comparisons.
fn hop_bit(n: &HeaderName) -> u16 {
    hop_bit_lower(n.as_str().as_bytes())
}

/// [`hop_bit`] of a lower-case name.
fn hop_bit_lower(n: &[u8]) -> u16 {
    match n {
        b"connection" => 1 << 0,
        b"keep-alive" => 1 << 1,
        b"proxy-connection" => 1 << 2,
        b"proxy-authenticate" => 1 << 3,
        b"proxy-authorization" => 1 << 4,
        b"trailer" => 1 << 5,
        b"transfer-encoding" => 1 << 6,
        b"upgrade" => 1 << 7,
        b"http2-settings" => 1 << 8,
        b"te" => TE_BIT,
        _ => 0,
    }
}

/// Whether a token of `Connection` names a header of [`HOP_BY_HOP`], in any case.
fn is_hop_by_hop_token(t: &[u8]) -> bool {
    const LONGEST: usize = "proxy-authorization".len();
    let mut lower = [0u8; LONGEST];
    let Some(lower) = lower.get_mut(..t.len()) else {
        return false;
    };
    for (l, b) in lower.iter_mut().zip(t) {
        *l = b.to_ascii_lowercase();
    }
    hop_bit_lower(lower) & !TE_BIT != 0
}

pub use crate::canonical::client::X_FORWARDED_FOR;
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The protocol a client asked to switch to, if this is an upgrade we pass through
/// (WebSocket and the like; `h2c` is not, since we speak HTTP/2 ourselves).
pub fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let up = h.get(header::UPGRADE)?;
    let connection_says_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    // Any list naming h2c is refused whole: passing `h2c, websocket` on would let a backend that
    // speaks h2c open a tunnel past routing.
    let names_h2c = h.get_all(header::UPGRADE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
    });
    let one_line = h.get_all(header::UPGRADE).iter().count() == 1;
    (connection_says_upgrade && !names_h2c && one_line).then(|| up.clone())
}

/// Removes hop-by-hop headers. With `upgrade`, re-adds `Connection: upgrade` and the
/// `Upgrade` value so the next hop sees the upgrade request or its acceptance.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // One scan of the names: which hop-by-hop headers are there at all. Comparing a few names
    // is far cheaper than a hashed removal per hop-by-hop name, and most messages carry none
    // of them or one (`Connection: keep-alive`).
    let mut present = 0u16;
    for n in h.keys() {
        present |= hop_bit(n);
    }
    let te = present & TE_BIT != 0;
    if present & 1 != 0 {
        // `Connection` names more headers to drop; the hop-by-hop ones go below anyway. One
        // lookup reads its names and removes it (nearly every response has it).
        if let header::Entry::Occupied(e) = h.entry(header::CONNECTION) {
            let named: smallvec::SmallVec<[HeaderName; 2]> = e
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(|t| t.trim_ascii())
                .filter(|t| !is_hop_by_hop_token(t))
                .filter_map(|t| HeaderName::from_bytes(t).ok())
                .collect();
            drop(e.remove_entry_mult());
            for n in named {
                h.remove(n);
            }
        }
        present &= !1;
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    // `TE: trailers` is the one TE value worth keeping: gRPC over HTTP/2 requires it. Every
    // line of it must say only that (a second `TE: gzip` line would otherwise ride along).
    if te
        && !h
            .get_all(header::TE)
            .iter()
            .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        h.remove(header::TE);
    }
    if let Some(up) = upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, up);
    }
}

/// What the gateway knows about the hop it received the request on.
pub struct Hop<'a> {
    /// The `X-Forwarded-For` to send: the resolved client, trusted hops, the peer
    /// (`canonical::client`).
    pub forwarded_for: HeaderValue,
    /// Whether the peer is a trusted proxy (whose `X-Forwarded-Proto/-Host` are kept).
    pub trusted: bool,
    /// The TCP peer's address as text (made once per connection): `for=` of the `Forwarded`
    /// element this hop appends.
    pub peer: &'a HeaderValue,
    pub proto: &'static str,
    pub host: Option<&'a HeaderValue>,
    /// `1.0`, `1.1` or `2`: the client's protocol version, for `Via`.
    pub version: &'static str,
    /// The connection's `Forwarded` value made for an untrusted peer, and its host
    /// (`ConnCtx::forwarded`).
    pub made: Option<&'a std::sync::OnceLock<(HeaderValue, HeaderValue)>>,
}

/// Sets `X-Forwarded-For` (as resolved), `X-Forwarded-Proto`, `X-Forwarded-Host` (kept from a
/// trusted peer, else ours), `Forwarded` (a trusted peer's list plus our element, else ours
/// alone) and `Via`.
pub fn set_forwarding(h: &mut HeaderMap, hop: &Hop<'_>) {
    h.insert(X_FORWARDED_FOR, hop.forwarded_for.clone());
    if !hop.trusted || !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.proto));
    }
    if !hop.trusted || !h.contains_key(&X_FORWARDED_HOST) {
        match hop.host {
            Some(v) => {
                h.insert(X_FORWARDED_HOST, v.clone());
            }
            None => {
                h.remove(&X_FORWARDED_HOST);
            }
        }
    }
    // An untrusted client's `Forwarded` and de-facto client headers would only mislead a
    // backend that reads them (ours replaces the first; the others go). Headers that make
    // some frameworks (IIS, Symfony, Zend) serve another path than the one the route matched go
    // whoever sent them. One pass over the names (a request has few) instead of a lookup each.
    // A `match` on the text (a switch on its length, then one comparison) rather than
    // `contains` over the lists: this runs for every header of every request.
    let unwanted = |name: &str| match name {
        "x-original-url" | "x-rewrite-url" => true,
        "forwarded" | "x-real-ip" | "true-client-ip" | "x-client-ip" | "x-forwarded-port"
        | "x-forwarded-prefix" | "x-forwarded-server" | "x-forwarded-ssl" => !hop.trusted,
        _ => false,
    };
    if h.keys().any(|k| unwanted(k.as_str())) {
        let names: Vec<HeaderName> = h.keys().filter(|k| unwanted(k.as_str())).cloned().collect();
        for n in names {
            h.remove(n);
        }
    }
    set_rfc7239(h, hop);
    let ours = match hop.version {
        "1.0" => "1.0 gatehouse",
        "2" => "2 gatehouse",
        _ => "1.1 gatehouse",
    };
    // One lookup for both cases (most requests have no `Via`).
    match h.entry(header::VIA) {
        header::Entry::Occupied(mut e) => {
            let next = e
                .get()
                .to_str()
                .ok()
                .and_then(|prev| HeaderValue::from_str(&format!("{prev}, {ours}")).ok());
            if let Some(v) = next {
                e.insert(v);
            }
        }
        header::Entry::Vacant(e) => {
            e.insert(HeaderValue::from_static(ours));
        }
    }
}

/// Appends this hop's element (`for=peer;host=...;proto=...`, RFC 7239 §4) to a trusted peer's
/// `Forwarded` list (all its lines folded into one), or writes it alone.
fn set_rfc7239(h: &mut HeaderMap, hop: &Hop<'_>) {
    // An untrusted peer's element is ours alone: the same for every request with this host.
    let made = hop.made.filter(|_| !hop.trusted).zip(hop.host);
    if let Some((Some((made_for, v)), host)) = made.map(|(m, host)| (m.get(), host)) {
        if made_for == host {
            h.insert(&FORWARDED, v.clone());
            return;
        }
    }
    let mut v = String::with_capacity(64);
    if hop.trusted {
        for prev in h.get_all(&FORWARDED) {
            // A trusted proxy's line that is not visible ASCII cannot be folded into a string;
            // dropping it loses only that proxy's claim.
            if let Ok(prev) = prev.to_str() {
                v.push_str(prev);
                v.push_str(", ");
            }
        }
    }
    // An IPv6 node is a quoted `"[addr]"` (§6).
    let peer = hop.peer.to_str().unwrap_or("unknown");
    if peer.contains(':') {
        v.push_str("for=\"[");
        v.push_str(peer);
        v.push_str("]\"");
    } else {
        v.push_str("for=");
        v.push_str(peer);
    }
    if let Some(host) = hop.host.and_then(|h| h.to_str().ok()) {
        v.push_str(";host=");
        push_value(&mut v, host);
    }
    v.push_str(";proto=");
    v.push_str(hop.proto);
    // The string's own buffer becomes the value's (no second allocation).
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(v.into_bytes())) {
        Ok(v) => {
            if let Some((m, host)) = made {
                // The first host the connection names is kept; another is built each time. A
                // copy of it: the client's own value is a slice of hyper's read buffer, which
                // would stay allocated for as long as the connection is open.
                if m.get().is_none() {
                    if let Ok(own) = HeaderValue::from_bytes(host.as_bytes()) {
                        let _ = m.set((own, v.clone()));
                    }
                }
            }
            h.insert(&FORWARDED, v);
        }
        Err(_) => {
            h.remove(&FORWARDED);
        }
    }
}

/// A `Forwarded` value: a token as is, anything else (a `host:port` has a colon) quoted.
fn push_value(out: &mut String, s: &str) {
    let tchar = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
    };
    if !s.is_empty() && s.bytes().all(tchar) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn each_hop_by_hop_name_has_its_own_bit() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_bit(n), 1 << i, "{n}");
        }
        assert_eq!(hop_bit(&header::TE), TE_BIT);
        assert_eq!(hop_bit(&header::HOST), 0);
        assert_eq!(hop_bit(&HeaderName::from_static("x-upgrade")), 0);
        // `Connection` tokens, in any case: the same names, and only those (`te` is not one).
        for n in &HOP_BY_HOP {
            let upper = n.as_str().to_ascii_uppercase();
            assert!(is_hop_by_hop_token(upper.as_bytes()), "{upper}");
            assert!(is_hop_by_hop_token(n.as_str().as_bytes()), "{n}");
        }
        for t in [
            "te",
            "TE",
            "",
            "close",
            "x-secret",
            "proxy-authorization-x",
            "keep-alivE2",
        ] {
            assert!(!is_hop_by_hop_token(t.as_bytes()), "{t}");
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.get("te").unwrap(), "trailers");
        // Several `Connection` lines, odd spacing and case, a name listed twice, `close`.
        let mut h = map(&[
            ("connection", "close"),
            ("connection", " X-One ,KEEP-ALIVE,,x-two, x-one"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("keep-alive", "timeout=5"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
        // A header named by `Connection` is dropped whatever its name (even `close`), and a
        // second `TE` line that is not `trailers` takes the whole field with it.
        let mut h = map(&[
            ("connection", "close"),
            ("close", "yes"),
            ("te", "trailers"),
            ("te", "gzip"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
        let mut h = map(&[("te", "trailers"), ("te", "Trailers")]);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.get_all("te").iter().count(), 2);
        // Nothing hop-by-hop: untouched.
        let mut h = map(&[("x-a", "1"), ("content-length", "2")]);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn upgrade_is_kept_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let up = upgrade_protocol(&h);
        assert_eq!(up.as_ref().unwrap(), "websocket");
        strip_hop_by_hop(&mut h, up);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        for up in ["h2c", "h2c, websocket", "websocket, H2C", "h2c,h2c"] {
            let h2c = map(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", up),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ]);
            assert!(upgrade_protocol(&h2c).is_none(), "{up}");
            let mut h = h2c.clone();
            strip_hop_by_hop(&mut h, None);
            assert!(h.is_empty(), "{up}: {h:?}");
        }
    }

    #[test]
    fn forwarding_trusted_and_untrusted() {
        let host = HeaderValue::from_static("api.example.com");
        let peer = HeaderValue::from_static("10.0.0.9");
        let hop = |trusted| Hop {
            forwarded_for: HeaderValue::from_static(if trusted {
                "1.2.3.4, 10.0.0.9"
            } else {
                "10.0.0.9"
            }),
            trusted,
            peer: &peer,
            proto: "http",
            host: Some(&host),
            version: "1.1",
            made: None,
        };
        let client = [
            ("x-real-ip", "6.6.6.6"),
            ("x-original-url", "/admin"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoof.example"),
            ("forwarded", "for=1.2.3.4"),
            ("via", "1.1 edge"),
        ];
        let mut h = map(&client);
        set_forwarding(&mut h, &hop(false));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example.com");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=10.0.0.9;host=api.example.com;proto=http"
        );
        assert!(h.get("x-real-ip").is_none());
        assert!(h.get("x-original-url").is_none());
        assert_eq!(h.get("via").unwrap(), "1.1 edge, 1.1 gatehouse");

        let mut h = map(&client);
        set_forwarding(&mut h, &hop(true));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.9");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "spoof.example");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=1.2.3.4, for=10.0.0.9;host=api.example.com;proto=http"
        );
        assert_eq!(h.get("x-real-ip").unwrap(), "6.6.6.6");
        assert!(h.get("x-original-url").is_none());
    }

    #[test]
    fn a_connections_forwarded_value_is_made_once_for_its_host() {
        let (a, b) = (
            HeaderValue::from_static("a.example"),
            HeaderValue::from_static("b.example"),
        );
        let peer = HeaderValue::from_static("10.0.0.9");
        let made = std::sync::OnceLock::new();
        let forwarded = |host: &HeaderValue, trusted: bool, client: &[(&str, &str)]| {
            let mut h = map(client);
            let hop = Hop {
                forwarded_for: peer.clone(),
                trusted,
                peer: &peer,
                proto: "http",
                host: Some(host),
                version: "1.1",
                made: Some(&made),
            };
            set_forwarding(&mut h, &hop);
            h.get("forwarded").unwrap().clone()
        };
        let first = forwarded(&a, false, &[]);
        assert_eq!(first, "for=10.0.0.9;host=a.example;proto=http");
        assert_eq!(made.get().unwrap().0, a);
        // A copy of the host: the client's value would hold hyper's read buffer.
        assert_ne!(
            made.get().unwrap().0.as_bytes().as_ptr(),
            a.as_bytes().as_ptr()
        );
        // The same host again: the value made for the first request, not a new one.
        let again = forwarded(&a, false, &[("forwarded", "for=6.6.6.6")]);
        assert_eq!(again, first);
        assert_eq!(again.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        // Another host gets its own element, and the first host stays the one kept.
        assert_eq!(
            forwarded(&b, false, &[]),
            "for=10.0.0.9;host=b.example;proto=http"
        );
        assert_eq!(made.get().unwrap().0, a);
        // A trusted peer's list is folded in: never the kept value.
        assert_eq!(
            forwarded(&a, true, &[("forwarded", "for=1.2.3.4")]),
            "for=1.2.3.4, for=10.0.0.9;host=a.example;proto=http"
        );
    }

    #[test]
    fn forwarded_quotes_what_is_not_a_token() {
        let host = HeaderValue::from_static("[::1]:8443");
        let (v6, v4) = (
            HeaderValue::from_static("2001:db8::7"),
            HeaderValue::from_static("1.2.3.4"),
        );
        let mut h = map(&[("forwarded", "for=a"), ("forwarded", "for=b")]);
        let hop = Hop {
            forwarded_for: HeaderValue::from_static("::1"),
            trusted: true,
            peer: &v6,
            proto: "https",
            host: Some(&host),
            version: "2",
            made: None,
        };
        set_forwarding(&mut h, &hop);
        assert_eq!(
            h.get("forwarded").unwrap(),
            r#"for=a, for=b, for="[2001:db8::7]";host="[::1]:8443";proto=https"#
        );
        let mut h = HeaderMap::new();
        set_forwarding(
            &mut h,
            &Hop {
                host: None,
                trusted: false,
                peer: &v4,
                ..hop
            },
        );
        assert_eq!(h.get("forwarded").unwrap(), "for=1.2.3.4;proto=https");
        let mut s = String::new();
        push_value(&mut s, r#"a"b\c"#);
        assert_eq!(s, r#""a\"b\\c""#);
    }
}
