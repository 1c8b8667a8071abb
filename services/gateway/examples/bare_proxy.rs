//! temporary experiment
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;

fn main() -> std::io::Result<()> {
    let listen: std::net::SocketAddr = std::env::var("L")
        .unwrap_or("127.0.0.1:18780".into())
        .parse()
        .unwrap_or_else(|_| std::process::exit(2));
    let up: String = std::env::var("U").unwrap_or("127.0.0.1:18781".into());
    let rt = if std::env::var("CT").is_ok() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(c);
        let l = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let client = client.clone();
            let up = up.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    let up = up.clone();
                    async move {
                        let (mut parts, _b) = req.into_parts();
                        let uri: Uri = format!("http://{}{}", up, parts.uri.path())
                            .parse()
                            .unwrap_or_default();
                        parts.uri = uri;
                        parts.headers.remove("host");
                        let r = Request::from_parts(parts, Full::new(Bytes::new()));
                        match client.request(r).await {
                            Ok(resp) => Ok::<_, Infallible>(resp.map(|b| b.boxed())),
                            Err(_) => Ok(Response::new(
                                Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
                            )),
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    })
}
