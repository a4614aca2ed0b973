//! The upgrade handshake on the wire: frames (`u32` big-endian length, then JSON) on a unix
//! stream socket, the first of them carrying the listening sockets as SCM_RIGHTS (rustix's
//! safe `sendmsg` / `recvmsg`: received descriptors arrive owned, close-on-exec). Everything
//! read is checked (length bound, JSON shape, descriptor count) and refused with a message
//! saying what was wrong, never trusted.

use super::Refusal;
use anyhow::{bail, Context as _};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// A frame longer than this is refused (a hello with thousands of endpoints is ~200 KiB).
const MAX_FRAME: usize = 8 << 20;
/// At most this many descriptors in one hello (the kernel's own cap is 253).
pub const MAX_FDS: usize = 128;

fn frame(msg: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(msg)?;
    let len = u32::try_from(json.len()).context("message too long")?;
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Sends one frame.
pub async fn write(stream: &mut UnixStream, msg: &impl Serialize) -> anyhow::Result<()> {
    stream.write_all(&frame(msg)?).await?;
    Ok(())
}

/// Sends one frame with `fds` attached to its first bytes.
pub async fn write_with_fds(
    stream: &mut UnixStream,
    msg: &impl Serialize,
    fds: &[BorrowedFd<'_>],
) -> anyhow::Result<()> {
    if fds.len() > MAX_FDS {
        bail!(
            "{} listening sockets; at most {MAX_FDS} can be handed over",
            fds.len()
        );
    }
    let bytes = frame(msg)?;
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(std::io::Error::other("no room for the descriptors"));
            }
            Ok(rustix::net::sendmsg(
                &*stream,
                &[IoSlice::new(&bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )?)
        })
        .await?;
    // The descriptors went with the first byte; the rest is plain bytes.
    stream.write_all(&bytes[sent..]).await?;
    Ok(())
}

/// Reads one frame: `T`, or the peer's refusal as an error.
pub async fn read<T: DeserializeOwned>(stream: &mut UnixStream) -> anyhow::Result<T> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .context("the other process closed the connection")?;
    let body = read_body(stream, u32::from_be_bytes(len) as usize, Vec::new()).await?;
    decode(&body)
}

/// Reads one frame and the descriptors sent with it.
pub async fn read_with_fds<T: DeserializeOwned>(
    stream: &mut UnixStream,
) -> anyhow::Result<(T, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 << 10];
    let mut fds = Vec::new();
    let got = stream
        .async_io(Interest::READABLE, || {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let r = rustix::net::recvmsg(
                &*stream,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = m {
                    fds.extend(received);
                }
            }
            Ok(r)
        })
        .await?;
    if got.flags.contains(ReturnFlags::CTRUNC) {
        bail!("more than {MAX_FDS} descriptors sent; refusing the handshake");
    }
    if got.bytes == 0 {
        bail!("the other process closed the connection before its handshake");
    }
    buf.truncate(got.bytes);
    while buf.len() < 4 {
        let mut more = [0u8; 4];
        let n = stream.read(&mut more[..4 - buf.len()]).await?;
        if n == 0 {
            bail!("the other process closed the connection in its handshake");
        }
        buf.extend_from_slice(&more[..n]);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let body = read_body(stream, len, buf.split_off(4)).await?;
    Ok((decode(&body)?, fds))
}

/// The rest of a `len`-byte frame body of which `have` has arrived.
async fn read_body(
    stream: &mut UnixStream,
    len: usize,
    mut have: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    if len > MAX_FRAME {
        bail!("garbled handshake: a frame of {len} bytes (at most {MAX_FRAME})");
    }
    if have.len() > len {
        bail!("garbled handshake: bytes after the frame");
    }
    let at = have.len();
    have.resize(len, 0);
    stream
        .read_exact(&mut have[at..])
        .await
        .context("the other process closed the connection in mid-message")?;
    Ok(have)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> anyhow::Result<T> {
    let value: serde_json::Value =
        serde_json::from_slice(body).context("garbled handshake: not JSON")?;
    if let Ok(r) = serde_json::from_value::<Refusal>(value.clone()) {
        bail!("the other process refused: {}", r.error);
    }
    serde_json::from_value(value).context("garbled handshake: unexpected message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Msg {
        n: u32,
    }

    #[tokio::test]
    async fn a_frame_carries_its_descriptors() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        write_with_fds(&mut a, &Msg { n: 7 }, &[l.as_fd()])
            .await
            .unwrap();
        let (m, fds): (Msg, _) = read_with_fds(&mut b).await.unwrap();
        assert_eq!(m, Msg { n: 7 });
        assert_eq!(fds.len(), 1);
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), l.local_addr().unwrap());
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[0, 0, 0, 3, b'n', b'o', b'!']).await.unwrap();
        let e = read::<Msg>(&mut b).await.unwrap_err();
        assert!(format!("{e:#}").contains("not JSON"), "{e:#}");
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let e = read::<Msg>(&mut b).await.unwrap_err();
        assert!(format!("{e:#}").contains("frame of"), "{e:#}");
        write(
            &mut a,
            &Refusal {
                error: "busy".into(),
            },
        )
        .await
        .unwrap();
        let e = read::<Msg>(&mut b).await.unwrap_err();
        assert!(format!("{e:#}").contains("refused: busy"), "{e:#}");
        drop(a);
        assert!(read::<Msg>(&mut b).await.is_err());
    }
}
