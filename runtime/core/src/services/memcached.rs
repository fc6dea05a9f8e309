//! An async, pipelining memcached client (text protocol) implementing [`Cache`].
//!
//! Why not the `memcache` crate: it is blocking, so each call costs a hop to tokio's blocking
//! pool and back. Measured on the normalize benchmark, those thread switches (not memcached)
//! were the stage's bottleneck. Here each connection is a pair of tasks: a writer that
//! coalesces every queued request into one `write`, and a reader that answers them in order
//! (memcached answers a connection's requests in the order they were sent). Many records in
//! flight share a few sockets and syscalls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Mutex};
use xxhash_rust::xxh3::xxh3_64;

use super::cache::{memcached_exptime, Cache, CacheError, CacheItem};

/// Connections per server: two keep a socket busy in each direction while the other
/// batches; more split the same load into smaller, costlier batches (measured).
const CONNECTIONS_PER_SERVER: usize = 2;
/// Longest wait for one answer before the server counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Most requests written in one batch.
const MAX_BATCH: usize = 512;

/// What a request expects back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// `STORED`, `NOT_STORED`, `EXISTS`, `NOT_FOUND`.
    Store,
    /// `VALUE ...` lines then `END`.
    Get,
    /// `DELETED` / `NOT_FOUND`.
    Delete,
    /// `VERSION ...`.
    Version,
    /// A number, or `NOT_FOUND`.
    Counter,
}

#[derive(Debug)]
enum Reply {
    Stored(bool),
    Value(Option<CacheItem>),
    Deleted(bool),
    Version,
    Counter(Option<u64>),
}

struct Request {
    bytes: Vec<u8>,
    expect: Expect,
    reply: oneshot::Sender<Result<Reply, CacheError>>,
}

type Pending = (Expect, oneshot::Sender<Result<Reply, CacheError>>);

/// One socket and its writer/reader tasks. Dropped (and replaced) when it fails.
struct Conn {
    tx: mpsc::Sender<Request>,
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(format!("memcached: {e}"))
}

impl Conn {
    async fn open(addr: &str) -> Result<Self, CacheError> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unavailable(format!("connecting to {addr} timed out")))?
            .map_err(|e| unavailable(format!("{addr}: {e}")))?;
        stream.set_nodelay(true).ok();
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Request>(4096);
        let (pending_tx, mut pending_rx) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(16 * 1024);
            while let Some(first) = rx.recv().await {
                buf.clear();
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                for r in batch {
                    buf.extend_from_slice(&r.bytes);
                    if pending_tx.send((r.expect, r.reply)).is_err() {
                        return;
                    }
                }
                if write.write_all(&buf).await.is_err() {
                    return; // the reader sees the broken socket and fails what is pending
                }
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, read);
            let mut line = Vec::with_capacity(256);
            while let Some((expect, reply)) = pending_rx.recv().await {
                let r = read_reply(&mut reader, &mut line, expect).await;
                let broken = matches!(r, Err(CacheError::Unavailable(_)));
                let _ = reply.send(r);
                if broken {
                    // Later answers cannot be matched any more: fail them all.
                    pending_rx.close();
                    while let Some((_, reply)) = pending_rx.recv().await {
                        let _ = reply.send(Err(unavailable("connection lost")));
                    }
                    return;
                }
            }
        });
        Ok(Self { tx })
    }
}

async fn read_line<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> Result<(), CacheError> {
    line.clear();
    let n = r.read_until(b'\n', line).await.map_err(unavailable)?;
    if n == 0 || !line.ends_with(b"\r\n") {
        return Err(unavailable("connection closed"));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

fn server_error(line: &[u8]) -> Option<CacheError> {
    let text = String::from_utf8_lossy(line);
    if text == "ERROR" || text.starts_with("CLIENT_ERROR") {
        Some(CacheError::Rejected(format!("memcached refused: {text}")))
    } else if text.starts_with("SERVER_ERROR") {
        Some(CacheError::Rejected(format!("memcached: {text}")))
    } else {
        None
    }
}

async fn read_reply<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    expect: Expect,
) -> Result<Reply, CacheError> {
    read_line(r, line).await?;
    if let Some(e) = server_error(line) {
        return Err(e);
    }
    let unexpected = |line: &[u8]| {
        unavailable(format!(
            "unexpected answer `{}`",
            String::from_utf8_lossy(line)
        ))
    };
    match expect {
        Expect::Store => match line.as_slice() {
            b"STORED" => Ok(Reply::Stored(true)),
            b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => Ok(Reply::Stored(false)),
            other => Err(unexpected(other)),
        },
        Expect::Delete => match line.as_slice() {
            b"DELETED" => Ok(Reply::Deleted(true)),
            b"NOT_FOUND" => Ok(Reply::Deleted(false)),
            other => Err(unexpected(other)),
        },
        Expect::Counter => match line.as_slice() {
            b"NOT_FOUND" => Ok(Reply::Counter(None)),
            digits => std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .map(|n| Reply::Counter(Some(n)))
                .ok_or_else(|| unexpected(digits)),
        },
        Expect::Version if line.starts_with(b"VERSION ") => Ok(Reply::Version),
        Expect::Version => Err(unexpected(line)),
        Expect::Get => {
            let mut item = None;
            while line.as_slice() != b"END" {
                // VALUE <key> <flags> <bytes> <cas>
                let text = std::str::from_utf8(line).map_err(|_| unexpected(line))?;
                let parts: Vec<&str> = text.split(' ').collect();
                let (Some(&"VALUE"), Some(len), Some(cas)) =
                    (parts.first(), parts.get(3), parts.get(4))
                else {
                    return Err(unexpected(line));
                };
                let len: usize = len.parse().map_err(|_| unexpected(line))?;
                let cas: u64 = cas.parse().map_err(|_| unexpected(line))?;
                let mut value = vec![0; len + 2];
                r.read_exact(&mut value).await.map_err(unavailable)?;
                value.truncate(len);
                item = Some(CacheItem { value, cas });
                read_line(r, line).await?;
            }
            Ok(Reply::Value(item))
        }
    }
}

struct Server {
    addr: String,
    conns: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Server {
    async fn conn(&self) -> Result<Arc<Conn>, CacheError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.tx.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(Conn::open(&self.addr).await?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// memcached servers; keys are spread over them by hash, the same way in every process.
pub struct MemcachedCache {
    servers: Vec<Server>,
}

impl MemcachedCache {
    /// A client for `host:port` addresses (a `memcache://` prefix is accepted). Connects
    /// lazily: a server that is down at start-up only makes the stage not-ready.
    pub fn new(addrs: &[String]) -> anyhow::Result<Self> {
        if addrs.is_empty() {
            anyhow::bail!("memcached: no server address given");
        }
        let servers = addrs
            .iter()
            .map(|a| Server {
                addr: a.trim().trim_start_matches("memcache://").to_string(),
                conns: (0..CONNECTIONS_PER_SERVER)
                    .map(|_| Mutex::new(None))
                    .collect(),
                next: AtomicUsize::new(0),
            })
            .collect();
        Ok(Self { servers })
    }

    fn server(&self, key: &str) -> &Server {
        &self.servers[(xxh3_64(key.as_bytes()) % self.servers.len() as u64) as usize]
    }

    async fn call(
        &self,
        server: &Server,
        bytes: Vec<u8>,
        expect: Expect,
    ) -> Result<Reply, CacheError> {
        let conn = server.conn().await?;
        let (reply, rx) = oneshot::channel();
        conn.tx
            .send(Request {
                bytes,
                expect,
                reply,
            })
            .await
            .map_err(|_| unavailable("connection lost"))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(unavailable("connection lost")),
            Err(_) => Err(unavailable(format!(
                "{} did not answer in time",
                server.addr
            ))),
        }
    }

    async fn store(
        &self,
        verb: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
        cas: Option<u64>,
    ) -> Result<bool, CacheError> {
        check_key(key)?;
        let exp = memcached_exptime(ttl);
        let mut bytes = Vec::with_capacity(key.len() + value.len() + 48);
        bytes.extend_from_slice(format!("{verb} {key} 0 {exp} {}", value.len()).as_bytes());
        if let Some(c) = cas {
            bytes.extend_from_slice(format!(" {c}").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
        match self.call(self.server(key), bytes, Expect::Store).await? {
            Reply::Stored(s) => Ok(s),
            other => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }
}

fn check_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() || key.len() > 250 || key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(CacheError::Rejected(format!(
            "invalid memcached key `{key}`"
        )));
    }
    Ok(())
}

#[async_trait]
impl Cache for MemcachedCache {
    fn name(&self) -> &'static str {
        "memcached"
    }

    async fn gets(&self, key: &str) -> Result<Option<CacheItem>, CacheError> {
        check_key(key)?;
        match self
            .call(
                self.server(key),
                format!("gets {key}\r\n").into_bytes(),
                Expect::Get,
            )
            .await?
        {
            Reply::Value(v) => Ok(v),
            other => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        self.store("add", key, value, ttl, None).await
    }

    async fn cas(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        cas: u64,
    ) -> Result<bool, CacheError> {
        self.store("cas", key, value, ttl, Some(cas)).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.store("set", key, value, ttl, None).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        check_key(key)?;
        match self
            .call(
                self.server(key),
                format!("delete {key}\r\n").into_bytes(),
                Expect::Delete,
            )
            .await?
        {
            Reply::Deleted(d) => Ok(d),
            other => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    async fn incr(&self, key: &str, delta: u64, ttl: Duration) -> Result<u64, CacheError> {
        check_key(key)?;
        // `incr` neither creates a counter nor sets its expiry: create it with `add`, and if
        // another client created it first, count on theirs.
        for _ in 0..3 {
            let request = format!("incr {key} {delta}\r\n").into_bytes();
            match self
                .call(self.server(key), request, Expect::Counter)
                .await?
            {
                Reply::Counter(Some(n)) => return Ok(n),
                Reply::Counter(None) => {}
                other => return Err(unavailable(format!("unexpected reply {other:?}"))),
            }
            if self
                .store("add", key, delta.to_string().as_bytes(), ttl, None)
                .await?
            {
                return Ok(delta);
            }
        }
        Err(unavailable(format!("counter `{key}` kept vanishing")))
    }

    async fn ping(&self) -> Result<(), CacheError> {
        for s in &self.servers {
            self.call(s, b"version\r\n".to_vec(), Expect::Version)
                .await?;
        }
        Ok(())
    }
}
