//! The embedded server's sockets: UDP queries are received, answered and sent in
//! one blocking loop per core, each on its own thread, with no task or channel
//! per query (hickory-server's UDP transport spawned a task per packet and sent
//! through a channel, which cost about a third of the throughput); TCP
//! connections are served by [`super::tcp`], with its limits; NOTIFY goes out
//! from [`super::notify`].

use super::notify::notify_secondaries;
use super::request::{Fast, ServeOptions, Shared, Worker};
use super::tcp::serve_tcp;
use super::zone_handle::ZoneHandle;
use crate::adapters::dns::Error;
use hickory_net::xfer::Protocol;
use ipnet::IpNet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc::UnboundedSender;
use tracing::debug;

/// Largest UDP response, whatever the client offers: the DNS Flag Day 2020 size,
/// which avoids IP fragmentation. Larger answers are truncated (TC) and the client
/// retries over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Kernel buffer of the UDP socket (capped by net.core.rmem_max/wmem_max): a
/// few milliseconds without CPU under load must not drop queries.
const UDP_SOCKET_BUFFER: usize = 4 << 20;

/// The embedded server, bound but not yet serving (so a caller binding port 0
/// learns the port first).
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen`. With port 0 both get the same free port.
    pub async fn bind(listen: SocketAddr) -> Result<DnsServer, Error> {
        let mut attempts = 0;
        loop {
            let udp = UdpSocket::bind(listen)
                .await
                .map_err(|source| Error::Bind {
                    addr: listen,
                    protocol: "udp",
                    source,
                })?;
            let addr = udp.local_addr().map_err(|source| Error::Bind {
                addr: listen,
                protocol: "udp",
                source,
            })?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(DnsServer { udp, tcp, addr }),
                Err(e)
                    if listen.port() == 0
                        && e.kind() == std::io::ErrorKind::AddrInUse
                        && attempts < 20 =>
                {
                    attempts += 1;
                }
                Err(source) => {
                    return Err(Error::Bind {
                        addr,
                        protocol: "tcp",
                        source,
                    });
                }
            }
        }
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers queries from `handle` until `shutdown` completes, with the
    /// default options: AXFR (over TCP) to clients in `allow_axfr`, rate
    /// limiting on, no cookies.
    pub async fn run(
        self,
        handle: ZoneHandle,
        allow_axfr: Vec<IpNet>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let options = ServeOptions {
            allow_axfr,
            ..Default::default()
        };
        self.run_with(handle, options, shutdown).await
    }

    /// Answers queries from `handle` until `shutdown` completes.
    pub async fn run_with(
        self,
        handle: ZoneHandle,
        options: ServeOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = self.addr;
        let shared = Arc::new(Shared::new(handle.clone(), &options));
        let serve_error = |e: std::io::Error| Error::Serve {
            addr,
            source: hickory_net::NetError::from(e),
        };
        // UDP: one receive loop per core, each on its own copy of the socket.
        let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
        let std_udp = self.udp.into_std().map_err(serve_error)?;
        let sock = socket2::SockRef::from(&std_udp);
        for result in [
            sock.set_recv_buffer_size(UDP_SOCKET_BUFFER),
            sock.set_send_buffer_size(UDP_SOCKET_BUFFER),
        ] {
            if let Err(error) = result {
                debug!(%error, "enlarging the UDP socket's buffers failed");
            }
        }
        let (failed, mut failure) = tokio::sync::mpsc::unbounded_channel();
        let udp = UdpThreads::start(&std_udp, &shared, loops, failed).map_err(serve_error)?;
        drop(std_udp);
        let tcp = tokio::spawn(serve_tcp(self.tcp, shared, options.tcp.clone()));
        let notify = (!options.transfer.notify.is_empty()).then(|| {
            let signer = options.transfer.keys.first().cloned();
            tokio::spawn(notify_secondaries(
                handle,
                options.transfer.notify.clone(),
                signer,
            ))
        });
        let result = tokio::select! {
            Some(e) = failure.recv() => Err(serve_error(e)),
            () = shutdown => Ok(()),
        };
        drop(udp);
        tcp.abort();
        if let Some(n) = notify {
            n.abort();
        }
        result
    }
}

/// Binds `listen` (UDP and TCP) and serves the zone in `handle` until `shutdown`.
pub async fn serve(
    handle: ZoneHandle,
    listen: SocketAddr,
    allow_axfr: Vec<IpNet>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    DnsServer::bind(listen)
        .await?
        .run(handle, allow_axfr, shutdown)
        .await
}

/// The UDP receive loops, one OS thread each on a blocking copy of the socket:
/// the kernel hands each datagram to one waiting thread, with no readiness
/// round trip through the runtime's event loop per query (and no wake-up of
/// every loop for one datagram). Dropping this stops them within
/// [`STOP_CHECK`].
struct UdpThreads {
    stop: Arc<AtomicBool>,
}

/// How often an idle receive loop looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

impl UdpThreads {
    /// Starts `loops` receive loops on copies of `socket`; a loop whose socket
    /// fails reports it on `failed` and ends.
    fn start(
        socket: &std::net::UdpSocket,
        shared: &Arc<Shared>,
        loops: usize,
        failed: UnboundedSender<std::io::Error>,
    ) -> std::io::Result<UdpThreads> {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(STOP_CHECK))?;
        // Made first, so that a failure to start a later loop (returned below)
        // drops it and stops the loops already started.
        let threads = UdpThreads {
            stop: Arc::new(AtomicBool::new(false)),
        };
        let runtime = tokio::runtime::Handle::current();
        for n in 0..loops {
            let socket = socket.try_clone()?;
            let worker = Worker::new(shared.clone());
            let stop = threads.stop.clone();
            let failed = failed.clone();
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name(format!("dns-udp-{n}"))
                .spawn(move || {
                    if let Err(e) = serve_udp(&socket, worker, &stop, &runtime) {
                        let _ = failed.send(e);
                    }
                })?;
        }
        Ok(threads)
    }
}

impl Drop for UdpThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers UDP queries on `socket` (blocking, with a read timeout) until it
/// fails or `stop` is set: receive, answer and send on this thread. The rare
/// query the fast path does not take is answered by the full handler, driven on
/// `runtime`.
fn serve_udp(
    socket: &std::net::UdpSocket,
    mut worker: Worker,
    stop: &AtomicBool,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<()> {
    // Queries are small; 4096 bytes also holds any UDP query a client sends.
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            // The socket itself is gone: the server stops (and the process with it).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotConnected | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Err(e);
            }
            // E.g. an ICMP error from an earlier send, reported on this socket.
            Err(error) => {
                debug!(%error, "receiving a UDP query failed");
                continue;
            }
        };
        // Nothing can be sent back to these.
        if src.port() == 0 || src.ip().is_unspecified() || src.ip().is_multicast() {
            continue;
        }
        let raw = &buf[..len];
        match worker.fast(raw, src, Protocol::Udp) {
            Fast::Reply => send(socket, &worker.out, src),
            Fast::Drop => {}
            Fast::Slow => {
                for reply in runtime.block_on(worker.slow(raw, src, Protocol::Udp)) {
                    send(socket, &reply, src);
                }
            }
        }
    }
    Ok(())
}

fn send(socket: &std::net::UdpSocket, reply: &[u8], to: SocketAddr) {
    if let Err(error) = socket.send_to(reply, to) {
        debug!(%error, %to, "sending a DNS response failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::dns::embedded::RrlConfig;
    use crate::core::zone::desired_zone;
    use crate::core::zone::fixtures::{cfg, domain};
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    use std::collections::HashMap;

    const TOKEN: &str = "abcdefghijklmnop";

    fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    /// Queries from several clients at once, sent faster than they are
    /// answered (they queue in the socket, and every loop takes from it):
    /// every query gets exactly its own answer, at the address it came from,
    /// the full handler's (ANY) included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_from_several_clients_gets_every_answer_at_its_source() {
        let handle = ZoneHandle::new();
        let zone = desired_zone(
            &cfg(),
            &crate::core::trust::Trust::as_written(),
            &[domain(
                "acme",
                "example.com",
                TOKEN,
                &[("anypost1", "QUJD")],
                true,
                1,
            )],
        );
        handle.publish(zone).unwrap();
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr();
        let options = ServeOptions {
            rrl: RrlConfig {
                rate: 0,
                ..RrlConfig::default()
            },
            ..ServeOptions::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_with(handle, options, async {
            let _ = stopped.await;
        }));
        let origin = "dns.anypost.example.";
        let mx = format!("{TOKEN}.{origin}");
        let clients: Vec<std::net::UdpSocket> = (0..4)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        const EACH: u16 = 100;
        let answers = tokio::task::spawn_blocking(move || {
            for (c, sock) in clients.iter().enumerate() {
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                for i in 0..EACH {
                    let id = (c as u16) * 1000 + i;
                    // Every tenth query takes the full handler.
                    let qtype = if i % 10 == 0 {
                        RecordType::ANY
                    } else {
                        RecordType::MX
                    };
                    sock.send_to(&query(id, &mx, qtype), addr).unwrap();
                }
            }
            let mut got: HashMap<u16, (usize, ResponseCode, usize)> = HashMap::new();
            for (c, sock) in clients.iter().enumerate() {
                let mut buf = [0u8; 2048];
                for _ in 0..EACH {
                    let (len, from) = sock.recv_from(&mut buf).expect("an answer to every query");
                    assert_eq!(from, addr);
                    let m = Message::from_vec(&buf[..len]).unwrap();
                    let e = got
                        .entry(m.metadata.id)
                        .or_insert((c, m.metadata.response_code, 0));
                    assert_eq!(e.0, c, "answer {} reached another client", m.metadata.id);
                    e.1 = m.metadata.response_code;
                    e.2 += m.answers.len();
                }
            }
            got
        })
        .await
        .unwrap();
        assert_eq!(answers.len(), 4 * usize::from(EACH), "one answer per query");
        for (id, (_, code, records)) in &answers {
            assert_eq!(*code, ResponseCode::NoError, "query {id}");
            assert!(*records >= 1, "query {id} was answered without its MX");
        }
        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
    }
}
