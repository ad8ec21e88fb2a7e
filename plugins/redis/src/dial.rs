//! Opening a subscriber connection: the socket, then AUTH if the URL carried credentials.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::options::{ConnectionOptions, Endpoint};
use crate::resp::{Frame, RespCodec};

/// A subscriber connection speaking RESP.
pub(crate) type Conn = Framed<TcpStream, RespCodec>;

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
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut conn = Framed::new(stream, RespCodec::default());
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
