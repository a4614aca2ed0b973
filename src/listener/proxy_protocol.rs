//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary) on a listener behind an L4
//! balancer: the header is read before HTTP, within the listener's `header_read_timeout`, and
//! parsed strictly by `ppp`; its source address becomes the connection's peer. A connection
//! without a valid header is closed. v2 `LOCAL` (the balancer's own health checks), v1
//! `UNKNOWN` and v2's unspecified and UNIX address families keep the TCP peer. A v2 header for a
//! datagram (UDP) connection, and a source of `0.0.0.0` or `::` (no client has it: it would put
//! every such connection under one client's limits), are refused. Bytes after the header are
//! handed to the HTTP server through [`Rewind`].

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
/// v2 headers carry TLVs; balancers send a few dozen bytes of them. More is refused.
const V2_MAX: usize = 16 + 2048;

/// Reads and parses the header. Returns the source address it names (`None` for LOCAL or
/// UNKNOWN) and the bytes read past it.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<(Option<SocketAddr>, Bytes)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some(found) = parse(&buf).map_err(bad)? {
            let (addr, len) = found;
            buf.advance(len);
            return Ok((addr, buf.freeze()));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(bad("connection closed inside the PROXY protocol header"));
        }
    }
}

/// `Ok(None)` while more bytes are needed; `Ok(Some((addr, header length)))` once complete.
fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, &'static str> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if buf.len() < 16 {
            return Ok(None);
        }
        let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if total > V2_MAX {
            return Err("PROXY protocol v2 header too long");
        }
        if buf.len() < total {
            return Ok(None);
        }
        let h = ppp::v2::Header::try_from(&buf[..total])
            .map_err(|_| "invalid PROXY protocol v2 header")?;
        if h.command == ppp::v2::Command::Proxy && h.protocol == ppp::v2::Protocol::Datagram {
            return Err("PROXY protocol v2 header for a datagram (UDP) connection");
        }
        let addr = match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, ppp::v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, _) => None,
        };
        return Ok(Some((specified(addr)?, total)));
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err("the connection did not start with a PROXY protocol header");
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err("PROXY protocol v1 header too long")
        } else {
            Ok(None)
        };
    };
    let total = end + 2;
    if total > V1_MAX {
        return Err("PROXY protocol v1 header too long");
    }
    let text =
        std::str::from_utf8(&buf[..total]).map_err(|_| "invalid PROXY protocol v1 header")?;
    let h = ppp::v1::Header::try_from(text).map_err(|_| "invalid PROXY protocol v1 header")?;
    let addr = match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    };
    Ok(Some((specified(addr)?, total)))
}

/// Refuses a source of `0.0.0.0` or `::`.
fn specified(addr: Option<SocketAddr>) -> Result<Option<SocketAddr>, &'static str> {
    match addr {
        Some(a) if a.ip().is_unspecified() => {
            Err("PROXY protocol header with an unspecified source address (0.0.0.0 or ::)")
        }
        a => Ok(a),
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(inner: S, prefix: Bytes) -> Self {
        Rewind { prefix, inner }
    }

    /// Whether some of the prefix is still to be read.
    pub fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream back, with whatever of the prefix was not read yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Drop the buffer itself, not just its contents: it would stay for the
                // connection's life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> io::Result<(Option<SocketAddr>, Bytes)> {
        let mut s: &[u8] = bytes;
        read_header(&mut s).await
    }

    fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | command);
        b.push(family);
        b.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        b.extend_from_slice(addrs);
        b
    }

    #[tokio::test]
    async fn v1_and_v2_headers() {
        let (a, rest) = read(b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(a, Some("192.0.2.7:5555".parse().unwrap()));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
        let (a, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 80\r\n")
            .await
            .unwrap();
        assert_eq!(a, Some("[2001:db8::7]:5555".parse().unwrap()));
        let (a, _) = read(b"PROXY UNKNOWN\r\n").await.unwrap();
        assert_eq!(a, None);

        // TCP over IPv4: source 192.0.2.9:4000, destination 10.0.0.1:80.
        let mut h = v2(1, 0x11, &[192, 0, 2, 9, 10, 0, 0, 1, 0x0f, 0xa0, 0, 80]);
        h.extend_from_slice(b"GET");
        let (a, rest) = read(&h).await.unwrap();
        assert_eq!(a, Some("192.0.2.9:4000".parse().unwrap()));
        assert_eq!(&rest[..], b"GET");
        // LOCAL: the balancer's own connection.
        let (a, _) = read(&v2(0, 0x00, &[])).await.unwrap();
        assert_eq!(a, None);
    }

    #[tokio::test]
    async fn strict_parsing() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 5555\r\n",
            b"PROXY TCP4 999.0.2.7 10.0.0.1 5555 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 5555 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 80",
        ] {
            assert!(
                read(bad).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Too long, and a v2 whose length runs past what was sent.
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(read(long.as_bytes()).await.is_err());
        let mut h = v2(1, 0x11, &[192, 0, 2, 9, 10, 0, 0, 1, 0x0f, 0xa0, 0, 80]);
        h[15] = 40;
        assert!(read(&h).await.is_err());
        // UDP over IPv4 and over IPv6, and unspecified sources in v1 and v2.
        assert!(read(&v2(
            1,
            0x12,
            &[192, 0, 2, 9, 10, 0, 0, 1, 0x0f, 0xa0, 0, 80]
        ))
        .await
        .is_err());
        let mut v6 = [0u8; 36];
        v6[0] = 0x20;
        v6[15] = 7;
        v6[16] = 0x20;
        v6[31] = 1;
        assert!(read(&v2(1, 0x22, &v6)).await.is_err());
        assert!(
            read(&v2(1, 0x21, &v6)).await.is_ok(),
            "TCP over IPv6 is fine"
        );
        assert!(
            read(&v2(1, 0x11, &[0, 0, 0, 0, 10, 0, 0, 1, 0x0f, 0xa0, 0, 80]))
                .await
                .is_err()
        );
        let mut any6 = v6;
        any6[..16].fill(0);
        assert!(read(&v2(1, 0x21, &any6)).await.is_err());
        for v1 in [
            &b"PROXY TCP4 0.0.0.0 10.0.0.1 5555 80\r\n"[..],
            b"PROXY TCP6 :: 2001:db8::1 5555 80\r\n",
        ] {
            assert!(read(v1).await.is_err(), "{:?}", String::from_utf8_lossy(v1));
        }
    }
}
