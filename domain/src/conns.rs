//! The connections of `unseen serve`: how many may be open, how many one
//! client address may hold, and how long a request's header may take, so
//! that clients holding connections open (thousands of unfinished headers)
//! cannot keep health checks and ordinary users out.
//!
//! Every request header must arrive within [`ConnectionLimits::header_timeout`]
//! or the connection is closed, and every request body within
//! [`ConnectionLimits::body_timeout`] or the request fails (400). When a client address holds its share, or
//! the server holds its maximum, the oldest idle connection (no request in
//! progress: still waiting for its header, or kept alive between requests)
//! of that client, or of anyone, is closed to make room. A new connection
//! is refused only when every connection it could replace is busy. So a
//! flood evicts its own idle connections and a client that sends its
//! request promptly is served.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;

/// Limits on the server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_per_client: usize,
    /// Time a client has to send each request's header.
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body, from the first
    /// time a handler reads it.
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            max_per_client: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(120),
        }
    }
}

/// An open connection.
#[derive(Debug)]
struct Live {
    ip: IpAddr,
    /// Requests in progress on it.
    busy: Arc<AtomicUsize>,
    abort: tokio::task::AbortHandle,
}

/// Open connections, oldest first.
#[derive(Debug, Default)]
struct Table {
    live: BTreeMap<u64, Live>,
    per_ip: HashMap<IpAddr, usize>,
    next: u64,
}

impl Table {
    /// Makes room for one more connection from `ip`, closing the oldest
    /// idle connection of `ip` if it holds its share, or the oldest idle
    /// one of anyone if the server is full. False if nothing could go.
    fn make_room(&mut self, ip: IpAddr, limits: &ConnectionLimits) -> bool {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_per_client {
            return self.close_oldest_idle(|l| l.ip == ip);
        }
        if self.live.len() >= limits.max_connections {
            return self.close_oldest_idle(|_| true);
        }
        true
    }

    fn close_oldest_idle(&mut self, which: impl Fn(&Live) -> bool) -> bool {
        let found = self
            .live
            .iter()
            .find(|(_, l)| which(l) && l.busy.load(Ordering::SeqCst) == 0)
            .map(|(&id, _)| id);
        match found.and_then(|id| self.remove(id)) {
            Some(live) => {
                live.abort.abort();
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, id: u64, live: Live) {
        *self.per_ip.entry(live.ip).or_default() += 1;
        self.live.insert(id, live);
    }

    fn remove(&mut self, id: u64) -> Option<Live> {
        let live = self.live.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&live.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&live.ip);
            }
        }
        Some(live)
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // Every update leaves the table whole: a panic elsewhere does not spoil it.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a connection from the table when its task ends, however it ends.
struct Gone {
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Drop for Gone {
    fn drop(&mut self) {
        lock(&self.table).remove(self.id);
    }
}

/// Counts a request as in progress until its response is ready.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request body that fails once `limit` has passed since it was first
/// read and it is still not complete, so a client trickling a body cannot
/// hold a request (and its connection) open.
struct Deadline<B> {
    inner: B,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, axum::BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let limit = this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the request body did not arrive within {} s; send it at once",
                limit.as_secs()
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A service that marks its connection busy while a request is handled
/// and bounds the time its body may take.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    busy: Arc<AtomicUsize>,
    body_timeout: Duration,
}

type Request<B> = hyper::Request<B>;

impl<S> hyper::service::Service<Request<hyper::body::Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<axum::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        self.busy.fetch_add(1, Ordering::SeqCst);
        let busy = Busy(Arc::clone(&self.busy));
        let limit = self.body_timeout;
        let request = request.map(|inner| {
            axum::body::Body::new(Deadline {
                inner,
                limit,
                timer: None,
            })
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            drop(busy);
            result
        })
    }
}

/// Most requests one HTTP/2 connection may have in flight at once.
const H2_STREAMS: u32 = 64;

/// Serves `conn` until it ends, or until `stopped` changes; then lets its
/// requests in progress finish (the caller bounds how long).
fn until_stopped<C>(
    conn: C,
    mut stopped: tokio::sync::watch::Receiver<()>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
where
    C: GracefulConnection + Send + 'static,
{
    // Boxed as a `Send` future of its own: the compiler cannot otherwise
    // prove the watch borrow is `Send` for every lifetime inside a spawned
    // task generic over the connection.
    Box::pin(async move {
        let mut conn = pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stopped.changed() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    })
}

/// A connection's byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Serves `app` on `listener` under `limits` (over TLS when `tls` is given) until `shutdown` resolves,
/// then stops accepting, lets requests in progress finish while the future
/// `drain()` returns runs, and closes the connections still open when it
/// ends (their requests are dropped).
pub async fn serve<D, F>(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    tls: Option<crate::tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: D,
) -> std::io::Result<()>
where
    D: FnOnce() -> F,
    F: Future<Output = ()>,
{
    let table = Arc::new(Mutex::new(Table::default()));
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // HTTP/2 is offered over TLS only (chosen by ALPN, so the version is
    // known before a byte of HTTP is read). An h2 connection is busy while
    // any of its streams is, and idle ones are closed first under pressure,
    // as HTTP/1 ones are; pings find peers that went away.
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS)
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a reset before accept: wait a
                    // little rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        let mut open = lock(&table);
        if !open.make_room(peer.ip(), &limits) {
            tracing::warn!(peer = %peer.ip(), "refused a connection: every connection is busy");
            continue;
        }
        let id = open.next;
        open.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let service = Tracked {
            inner: TowerToHyperService::new(app.clone()),
            busy: Arc::clone(&busy),
            body_timeout: limits.body_timeout,
        };
        let gone = Gone {
            table: Arc::clone(&table),
            id,
        };
        let stopped = stopped.clone();
        let (http, http2, tls) = (http.clone(), http2.clone(), tls.clone());
        let handshake = limits.header_timeout;
        let abort = tasks.spawn(async move {
            let _gone = gone;
            let (io, h2): (Box<dyn Io>, bool) = match tls {
                None => (Box::new(stream), false),
                // The handshake is part of the header's time.
                Some(crate::tls::Tls(acceptor)) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            (Box::new(stream), h2)
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "a TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let io = TokioIo::new(io);
            if h2 {
                until_stopped(http2.serve_connection(io, service), stopped).await;
            } else {
                until_stopped(http.serve_connection(io, service), stopped).await;
            }
        });
        open.insert(
            id,
            Live {
                ip: peer.ip(),
                busy,
                abort,
            },
        );
    }
    drop(listener);
    let _ = stop.send(());
    let drained = async { while tasks.join_next().await.is_some() {} };
    tokio::select! {
        () = drained => {}
        () = drain() => {
            let left = tasks.len();
            if left > 0 {
                tracing::warn!(connections = left, "closing connections still busy at the end of the grace period");
            }
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(table: &mut Table, ip: [u8; 4], busy: usize, tasks: &mut tokio::task::JoinSet<()>) {
        let id = table.next;
        table.next += 1;
        let abort = tasks.spawn(std::future::pending());
        table.insert(
            id,
            Live {
                ip: IpAddr::from(ip),
                busy: Arc::new(AtomicUsize::new(busy)),
                abort,
            },
        );
    }

    #[test]
    fn a_full_table_closes_the_oldest_idle_connection_of_the_crowding_client() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut tasks = tokio::task::JoinSet::new();
        let limits = ConnectionLimits {
            max_connections: 4,
            max_per_client: 3,
            ..ConnectionLimits::default()
        };
        let mut t = Table::default();
        live(&mut t, [10, 0, 0, 1], 1, &mut tasks); // 0: busy
        live(&mut t, [10, 0, 0, 1], 0, &mut tasks); // 1: idle
        live(&mut t, [10, 0, 0, 2], 0, &mut tasks); // 2: idle, other client
        live(&mut t, [10, 0, 0, 1], 0, &mut tasks); // 3: idle
        // Client .1 holds its share: its oldest idle connection goes.
        assert!(t.make_room(IpAddr::from([10, 0, 0, 1]), &limits));
        assert_eq!(t.live.keys().copied().collect::<Vec<_>>(), [0, 2, 3]);
        // A third client at the global cap: the oldest idle of anyone.
        live(&mut t, [10, 0, 0, 1], 1, &mut tasks); // 4: busy
        assert!(t.make_room(IpAddr::from([10, 0, 0, 3]), &limits));
        assert_eq!(t.live.keys().copied().collect::<Vec<_>>(), [0, 3, 4]);
        // Everything of client .1 busy and at its share: refused.
        t.live.get(&3).unwrap().busy.store(1, Ordering::SeqCst);
        assert!(!t.make_room(IpAddr::from([10, 0, 0, 1]), &limits));
        assert_eq!(t.per_ip.get(&IpAddr::from([10, 0, 0, 1])), Some(&3));
    }
}
