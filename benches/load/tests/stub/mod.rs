//! A tiny in-test fan-out server speaking just enough of the switchyard protocol (welcome,
//! subscribe, publish with ok, message) to exercise the load generator end to end without the
//! real broker. It is deliberately naive: one unbounded queue per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Subs = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<String>>>>>;

pub struct Stub {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start() -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
    let addr = listener.local_addr().expect("stub addr");
    let subs: Subs = Arc::default();
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok((tcp, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(serve(tcp, n, subs.clone()));
        }
    });
    Stub { addr, task }
}

#[allow(clippy::result_large_err)] // the callback signature is tungstenite's
async fn serve(tcp: tokio::net::TcpStream, n: u64, subs: Subs) {
    let mut query = String::new();
    let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
              resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
        query = req.uri().query().unwrap_or("").to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else { return };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    for part in query.split('&') {
        if let Some(chs) = part.strip_prefix("channel=") {
            for ch in chs.split(',') {
                subs.lock().expect("lock").entry(ch.to_string()).or_default().push(tx.clone());
            }
        }
    }
    let _ = tx.send(format!(r#"{{"op":"welcome","conn":"stub:{n}","node":"stub"}}"#));
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(Message::text(m)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else { continue };
        let id = v.get("id").cloned();
        let channel = v["channel"].as_str().unwrap_or_default().to_string();
        match v["op"].as_str() {
            Some("subscribe") => {
                subs.lock().expect("lock").entry(channel).or_default().push(tx.clone());
            }
            Some("publish") => {
                let out = serde_json::json!({"op":"message","channel":channel,"data":v["data"]})
                    .to_string();
                let targets = subs.lock().expect("lock").get(&channel).cloned().unwrap_or_default();
                for t in targets {
                    let _ = t.send(out.clone());
                }
            }
            _ => continue,
        }
        if let Some(id) = id {
            let _ = tx.send(serde_json::json!({"op":"ok","id":id}).to_string());
        }
    }
    writer.abort();
}
