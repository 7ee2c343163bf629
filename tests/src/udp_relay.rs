//! A UDP relay standing for a network link between two programs on loopback: it forwards
//! every datagram between its clients and one server, and can go **silent** (drop every
//! datagram, both directions) on command or after a number of bytes sent towards the
//! clients, then come back, or be **lossy** (drop a share of the datagrams each way, chosen
//! by a seeded generator). No process dies and no packet is refused: the ends see a link
//! that stops carrying anything, as a cut cable or a dead uplink router looks to them.
//!
//! It sits below QUIC: the client's TLS session is with the server itself (the client dials
//! the relay's address with the **server's** certificate pin), so, unlike
//! [`crate::fake_peer::CorruptingProxy`], which ends QUIC and speaks the protocol on both
//! sides, it can neither read nor change what it carries, only drop it.
//!
//! Each client address gets its own socket towards the server (a NAT's mapping), kept for
//! the relay's life. Plain threads with short read timeouts; dropped, it stops them.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a relay thread blocks on a read before looking at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Larger than any datagram QUIC sends on loopback.
const DATAGRAM: usize = 65_536;
/// No threshold armed.
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
struct Shared {
    server: SocketAddr,
    silent: AtomicBool,
    /// Go silent once `down` would pass this many bytes ([`NEVER`]: not armed).
    silent_at_down: AtomicU64,
    /// Bytes forwarded server → clients.
    down: AtomicU64,
    /// Bytes forwarded clients → server.
    up: AtomicU64,
    /// Datagrams dropped while silent (both directions).
    dropped: AtomicU64,
    /// Datagrams dropped per thousand when not silent.
    loss_per_mille: AtomicU64,
    /// The loss generator's state (xorshift).
    loss_state: AtomicU64,
    /// Datagrams dropped as losses.
    lost: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    /// Whether this datagram is lost (with the configured loss rate).
    fn loses(&self) -> bool {
        let per_mille = self.loss_per_mille.load(Ordering::SeqCst);
        if per_mille == 0 {
            return false;
        }
        let mut next = 0;
        let _ = self
            .loss_state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |mut x| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                next = x;
                Some(x)
            });
        if next % 1000 < per_mille {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Whether a datagram of `len` bytes going towards a client passes (and counts it).
    fn pass_down(&self, len: usize) -> bool {
        if self.silent.load(Ordering::SeqCst) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        if self.loses() {
            return false;
        }
        let after = self.down.fetch_add(len as u64, Ordering::SeqCst) + len as u64;
        if after > self.silent_at_down.load(Ordering::SeqCst) {
            self.down.fetch_sub(len as u64, Ordering::SeqCst);
            self.silent_at_down.store(NEVER, Ordering::SeqCst);
            self.silent.store(true, Ordering::SeqCst);
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Whether a datagram of `len` bytes going towards the server passes (and counts it).
    fn pass_up(&self, len: usize) -> bool {
        if self.silent.load(Ordering::SeqCst) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        if self.loses() {
            return false;
        }
        self.up.fetch_add(len as u64, Ordering::SeqCst);
        true
    }
}

/// A UDP relay in front of one server; see the module documentation.
#[derive(Debug)]
pub struct UdpRelay {
    /// The address clients dial instead of the server's.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl UdpRelay {
    /// A relay on a free loopback port forwarding to `server`.
    ///
    /// # Panics
    /// When no loopback socket can be bound.
    pub fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind the relay"));
        front.set_read_timeout(Some(POLL)).expect("a read timeout");
        let addr = front.local_addr().expect("the relay's address");
        let shared = Arc::new(Shared {
            server,
            silent: AtomicBool::new(false),
            silent_at_down: AtomicU64::new(NEVER),
            down: AtomicU64::new(0),
            up: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            loss_per_mille: AtomicU64::new(0),
            loss_state: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            lost: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let threads = Arc::new(Mutex::new(Vec::new()));
        let main = {
            let (shared, threads) = (shared.clone(), threads.clone());
            std::thread::spawn(move || front_loop(&front, &shared, &threads))
        };
        threads.lock().expect("the thread list").push(main);
        Self {
            addr,
            shared,
            threads,
        }
    }

    /// Drops every datagram from now on, both directions.
    pub fn silence(&self) {
        self.shared.silent.store(true, Ordering::SeqCst);
    }

    /// Goes silent once `bytes` more bytes have been forwarded towards the clients.
    pub fn silence_after_down(&self, bytes: u64) {
        let at = self
            .shared
            .down
            .load(Ordering::SeqCst)
            .saturating_add(bytes);
        self.shared.silent_at_down.store(at, Ordering::SeqCst);
    }

    /// Carries datagrams again.
    pub fn restore(&self) {
        self.shared.silent_at_down.store(NEVER, Ordering::SeqCst);
        self.shared.silent.store(false, Ordering::SeqCst);
    }

    /// Whether it is dropping everything.
    pub fn is_silent(&self) -> bool {
        self.shared.silent.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the server towards the clients (UDP payloads).
    pub fn down_bytes(&self) -> u64 {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the clients towards the server (UDP payloads).
    pub fn up_bytes(&self) -> u64 {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Datagrams dropped while silent.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Drops `per_mille` datagrams in a thousand, each way, chosen by a fixed-seed generator
    /// (0: none).
    pub fn set_loss(&self, per_mille: u64) {
        self.shared
            .loss_per_mille
            .store(per_mille.min(1000), Ordering::SeqCst);
    }

    /// Datagrams dropped as losses.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// `ADDR` `PIN` as the programs' `--origin`/`--origin-pin` or `--upstream ADDR=PIN` take
    /// it: the relay's address with the server's pin.
    pub fn upstream_arg(&self, server_pin: &str) -> String {
        format!("{}={server_pin}", self.addr)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The front thread adds mapping threads; once it is joined, no more are added.
        loop {
            let next = self.threads.lock().map(|mut t| t.pop()).unwrap_or(None);
            match next {
                Some(handle) => {
                    let _ = handle.join();
                }
                None => break,
            }
        }
    }
}

/// Clients → server: one socket towards the server per client address.
fn front_loop(front: &Arc<UdpSocket>, shared: &Arc<Shared>, threads: &Mutex<Vec<JoinHandle<()>>>) {
    let mut mappings: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((len, client)) = front.recv_from(&mut buf) else {
            continue;
        };
        if !shared.pass_up(len) {
            continue;
        }
        let towards = match mappings.get(&client) {
            Some(socket) => socket.clone(),
            None => {
                let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
                    continue;
                };
                if socket.connect(shared.server).is_err()
                    || socket.set_read_timeout(Some(POLL)).is_err()
                {
                    continue;
                }
                let socket = Arc::new(socket);
                let back = {
                    let (socket, front, shared) = (socket.clone(), front.clone(), shared.clone());
                    std::thread::spawn(move || back_loop(&socket, &front, client, &shared))
                };
                if let Ok(mut list) = threads.lock() {
                    list.push(back);
                }
                mappings.insert(client, socket.clone());
                socket
            }
        };
        let _ = towards.send(&buf[..len]);
    }
}

/// Server → one client.
fn back_loop(socket: &UdpSocket, front: &UdpSocket, client: SocketAddr, shared: &Shared) {
    let mut buf = vec![0u8; DATAGRAM];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok(len) = socket.recv(&mut buf) else {
            continue;
        };
        if shared.pass_down(len) {
            let _ = front.send_to(&buf[..len], client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the relay: datagrams pass, are counted, stop when silent (both
    /// ways), pass again when restored, and the byte threshold silences it by itself.
    #[test]
    fn forwards_goes_silent_and_comes_back() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = echo.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let echoing = {
            let stop = stop.clone();
            echo.set_read_timeout(Some(POLL)).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut seen = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((len, from)) = echo.recv_from(&mut buf) {
                        seen += 1;
                        echo.send_to(&buf[..len], from).unwrap();
                    }
                }
                seen
            })
        };
        let relay = UdpRelay::start(server);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut round = |payload: &[u8]| -> Option<Vec<u8>> {
            client.send_to(payload, relay.addr).unwrap();
            client.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
        };
        assert_eq!(round(b"one").as_deref(), Some(&b"one"[..]));
        assert_eq!((relay.up_bytes(), relay.down_bytes()), (3, 3));

        relay.silence();
        assert_eq!(round(b"two"), None, "a silent link carries nothing");
        assert_eq!(relay.dropped(), 1, "dropped on the way up");
        relay.restore();
        assert_eq!(round(b"three").as_deref(), Some(&b"three"[..]));

        // Five more bytes down pass; the next datagram crosses the threshold and is dropped.
        relay.silence_after_down(5);
        assert_eq!(round(b"four").as_deref(), Some(&b"four"[..]));
        assert_eq!(round(b"five"), None, "dropped on the way down");
        assert!(relay.is_silent());
        assert_eq!(relay.down_bytes(), 3 + 5 + 4);
        relay.restore();
        assert_eq!(round(b"six").as_deref(), Some(&b"six"[..]));

        // Every datagram lost, then none.
        relay.set_loss(1000);
        assert_eq!(
            round(b"seven"),
            None,
            "a link losing everything carries nothing"
        );
        assert_eq!(relay.lost(), 1);
        relay.set_loss(0);
        assert_eq!(round(b"eight").as_deref(), Some(&b"eight"[..]));
        drop(relay);
        stop.store(true, Ordering::SeqCst);
        // "two" and "seven" never reached the server; "five" did (dropped on its way back).
        assert_eq!(echoing.join().unwrap(), 6);
    }
}
