//! A JWKS server on 127.0.0.1, plain or TLS (a self-signed certificate made
//! by rcgen), that counts its requests and serves whatever the test sets.
//! Deliberately tiny: one request per connection, `Connection: close`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) cache_control: Option<String>,
}

pub(crate) struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
    task: JoinHandle<()>,
    /// The CA (self-signed certificate) to trust, for TLS.
    pub(crate) ca_pem: Option<String>,
}

impl JwksServer {
    pub(crate) async fn plain(body: String) -> Self {
        Self::start(body, None).await
    }

    pub(crate) async fn tls(body: String) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
        let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the server certificate");
        let mut server = Self::start(body, Some(TlsAcceptor::from(Arc::new(config)))).await;
        server.ca_pem = Some(certified.cert.pem());
        server
    }

    async fn start(body: String, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let hits = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body,
            cache_control: None,
        }));
        let (counted, served) = (hits.clone(), reply.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (hits, reply, tls) = (counted.clone(), served.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(stream, &hits, &reply).await;
                            }
                        }
                        None => answer(stream, &hits, &reply).await,
                    }
                });
            }
        });
        Self {
            url: format!("{scheme}://{addr}/jwks.json"),
            hits,
            reply,
            task,
            ca_pem: None,
        }
    }

    pub(crate) fn url(&self) -> String {
        self.url.clone()
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn set_body(&self, body: String) {
        self.reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .body = body;
    }

    pub(crate) fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap_or_else(PoisonError::into_inner) = reply;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    hits: &AtomicUsize,
    reply: &Mutex<Reply>,
) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let reply = reply.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let cache_control = reply
        .cache_control
        .map(|value| format!("cache-control: {value}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{cache_control}connection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
