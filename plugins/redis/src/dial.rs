//! Opening a subscriber connection: the socket (TCP, TLS over TCP, or a unix socket), then
//! AUTH if the URL carried credentials.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use crate::options::{Addr, ConnectionOptions, Endpoint};
use crate::resp::{Frame, RespCodec};

/// A subscriber connection speaking RESP.
pub(crate) type Conn = Framed<Stream, RespCodec>;

/// The transports a subscriber connection runs on. An enum rather than a boxed trait object:
/// the match per read or write is free, and plain TCP keeps its exact old behaviour.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens the socket for `endpoint`, with the TLS handshake for `rediss://`.
async fn open(endpoint: &Endpoint) -> Result<Stream, String> {
    match &endpoint.addr {
        Addr::Tcp { host, port } => {
            let stream =
                TcpStream::connect((host.as_str(), *port)).await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            Ok(Stream::Tcp(stream))
        }
        Addr::Tls { host, port } => {
            let tls = endpoint.tls.as_ref().ok_or("rediss:// endpoint without TLS setup")?;
            // An IP address is checked against the certificate's IP SANs, a name against its
            // DNS SANs, as redis-rs does for the publishers.
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("invalid TLS server name {host:?}: {e}"))?;
            let stream =
                TcpStream::connect((host.as_str(), *port)).await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let stream = TlsConnector::from(tls.config.clone())
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(Stream::Tls(Box::new(stream)))
        }
        Addr::Unix(path) => {
            Ok(Stream::Unix(UnixStream::connect(path).await.map_err(|e| e.to_string())?))
        }
    }
}

/// Sends one command and flushes it.
pub(crate) async fn send(conn: &mut Conn, args: &[&[u8]]) -> Result<(), String> {
    conn.send(args).await.map_err(|e| e.to_string())
}

/// Opens a connection and authenticates if the URL carried credentials, within the connect
/// timeout.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    options: &ConnectionOptions,
) -> Result<Conn, String> {
    let setup = async {
        let mut conn = Framed::new(open(endpoint).await?, RespCodec::default());
        authenticate(&mut conn, endpoint).await?;
        Ok(conn)
    };
    match tokio::time::timeout(options.connect_timeout, setup).await {
        Ok(result) => result,
        Err(_) => Err(format!("connect timed out after {:?}", options.connect_timeout)),
    }
}

async fn authenticate(conn: &mut Conn, endpoint: &Endpoint) -> Result<(), String> {
    let settings = endpoint.info.redis_settings();
    let Some(password) = settings.password() else { return Ok(()) };
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    if let Some(user) = settings.username() {
        args.push(user.as_bytes());
    }
    args.push(password.as_bytes());
    send(conn, &args).await?;
    match conn.next().await {
        Some(Ok(Frame::Simple(_))) => Ok(()),
        Some(Ok(Frame::Error(e))) => Err(format!("AUTH failed: {e}")),
        Some(Ok(_)) => Err("unexpected reply to AUTH".into()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("connection closed during AUTH".into()),
    }
}
