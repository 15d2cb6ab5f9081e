//! The in-process S3 server: s3s-fs's file-system backend behind s3s, on a loopback port.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// An S3 server running in this process, for tests: s3s-fs over a temp dir, served on
/// `127.0.0.1:<free port>`, with fixed test credentials and one bucket ([`S3Server::BUCKET`])
/// created. Stopped (and its files removed) when dropped.
///
/// It runs on its own thread and tokio runtime, so it serves requests whatever the test does
/// with its own runtime (current-thread, blocked in a sync call, or paused time).
///
/// ```
/// use objsync::testing::S3Server;
///
/// let server = S3Server::start()?;
/// assert!(server.endpoint().starts_with("http://127.0.0.1:"));
/// let store = server.config().build()?; // an `Arc<dyn ObjectStore>` on the bucket
/// # drop(store);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct S3Server {
    addr: SocketAddr,
    endpoint: String,
    /// Tells the accept loop to stop; `None` once sent.
    shutdown: Option<oneshot::Sender<()>>,
    /// The server thread, which owns the runtime; joined on drop, before `dir` is removed.
    thread: Option<thread::JoinHandle<()>>,
    /// The server's root: one directory per bucket.
    dir: TempDir,
}

impl S3Server {
    /// The bucket that exists from the start.
    pub const BUCKET: &'static str = "objsync-test";
    /// The access key id the server accepts.
    pub const ACCESS_KEY_ID: &'static str = "objsync-test-key";
    /// The secret access key the server accepts.
    pub const SECRET_ACCESS_KEY: &'static str = "objsync-test-secret";
    /// The region clients sign for (s3s accepts any).
    pub const REGION: &'static str = "us-east-1";

    /// Starts a server over a fresh temp dir. It accepts connections when this returns.
    pub fn start() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("objsync-s3-").tempdir()?;
        // s3s-fs's CreateBucket is exactly this: a bucket is a directory under the root.
        std::fs::create_dir(dir.path().join(Self::BUCKET))?;
        let fs = s3s_fs::FileSystem::new(dir.path()).map_err(|err| {
            io::Error::other(format!("s3s-fs over {}: {err:?}", dir.path().display()))
        })?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(
            Self::ACCESS_KEY_ID,
            Self::SECRET_ACCESS_KEY,
        ));
        let service = builder.build();

        // Bound here, so the port is known and connections queue before the thread runs.
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("objsync-s3-server")
            .enable_all()
            .build()?;
        let (shutdown, stop) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("objsync-s3-server".into())
            .spawn(move || {
                runtime.block_on(serve(listener, service, stop));
                // Dropping the runtime cancels the connection tasks still running.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })?;
        Ok(Self {
            addr,
            endpoint: format!("http://{addr}"),
            shutdown: Some(shutdown),
            thread: Some(thread),
            dir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The address the server listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's root directory: one directory per bucket, objects as files inside.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl fmt::Debug for S3Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credentials are fixed test values, but Debug output never carries them.
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint)
            .field("bucket", &Self::BUCKET)
            .field("data_dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The loop may have ended already (a failed listener); nothing to tell then.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has been printed already; do not panic in drop.
            let _ = thread.join();
        }
    }
}

/// Accepts connections until `stop` fires, serving each on its own task.
async fn serve(
    listener: std::net::TcpListener,
    service: S3Service,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%err, "objsync test S3 server: cannot register its listener");
            return;
        }
    };
    let http = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Without it, small responses wait on the client's delayed ACK (~40 ms a
                    // request). Failing to set it only costs speed.
                    let _ = stream.set_nodelay(true);
                    let conn = http
                        .serve_connection(TokioIo::new(stream), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        // A client that hangs up mid-request is not the server's problem.
                        let _ = conn.await;
                    });
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%err, "objsync test S3 server: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}
