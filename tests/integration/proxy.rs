//! A small HTTP proxy between the daemon and the S3 server that injects faults: connection
//! resets, 500 InternalError, 503 SlowDown, answers lost after the request was applied, and
//! delays. One request per connection (it answers `Connection: close`), which keeps it
//! simple and makes every fault land on exactly one request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// One request in `one_in` gets a fault, cycling through reset, 500, 503 SlowDown and
    /// "applied, but the answer is lost".
    Faults { one_in: u64 },
    /// Answer every request with 503 SlowDown.
    SlowDownAll,
    /// Forward after waiting this long.
    Delay(Duration),
    /// Forward everything, but lose the answer to the first PUT (the object is stored).
    LoseFirstPutAnswer,
    /// Forward everything, but lose the answer to the first request that makes each
    /// object (a PutObject, or a CompleteMultipartUpload): every object is stored, and
    /// the daemon hears of none the first time.
    LoseFirstAnswerPerObject,
    /// Forward everything, and lose the answer to one request in `one_in` of those that
    /// make an object (PutObject, CompleteMultipartUpload): applied, never heard of.
    LoseAnswers { one_in: u64 },
    /// Answer the first UploadPart with 400 ExpiredToken, forward everything else.
    ExpireTokenAtFirstPart,
    /// Answer 503 SlowDown to every PUT whose path contains this; forward everything else.
    FailPutsTo(&'static str),
    /// The endpoint is gone: every connection is reset before any answer.
    Down,
}

struct State {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    seen: AtomicU64,
    faults: AtomicU64,
    log: Mutex<Vec<String>>,
    /// Objects whose first making answer was lost (`LoseFirstAnswerPerObject`).
    lost: Mutex<std::collections::HashSet<String>>,
    /// Requests that make an object seen (`LoseAnswers`).
    made: AtomicU64,
    /// Every request: head and, when short and text, body.
    full: Mutex<Vec<String>>,
}

pub struct FaultProxy {
    pub port: u16,
    state: Arc<State>,
}

impl FaultProxy {
    pub fn start(upstream_endpoint: &str, mode: Mode) -> FaultProxy {
        let upstream: SocketAddr = upstream_endpoint
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            mode: Mutex::new(mode),
            seen: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            lost: Mutex::new(std::collections::HashSet::new()),
            made: AtomicU64::new(0),
            full: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(&state, client);
                });
            }
        });
        FaultProxy { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Requests seen, as "METHOD /path?query".
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// Every request as text: request line, headers and (short, text) body.
    pub fn recorded(&self) -> Vec<String> {
        self.state.full.lock().unwrap().clone()
    }

    pub fn faults(&self) -> u64 {
        self.state.faults.load(Ordering::Relaxed)
    }
}

fn serve(state: &State, client: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let request_line = head[0].trim_end().to_string();
    let length: usize = head
        .iter()
        .find_map(|h| {
            let (name, value) = h.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let what = request_line
        .rsplit_once(' ')
        .map_or(request_line.as_str(), |(w, _)| w)
        .to_string();
    state.log.lock().unwrap().push(what);
    let mut full: String = head.concat();
    if body.len() <= 4096 {
        full.push_str(&String::from_utf8_lossy(&body));
    }
    state.full.lock().unwrap().push(full);

    let n = state.seen.fetch_add(1, Ordering::Relaxed) + 1;
    let mode = *state.mode.lock().unwrap();
    let fault = match mode {
        Mode::Pass | Mode::Delay(_) => None,
        Mode::LoseFirstPutAnswer => (request_line.starts_with("PUT ")
            && state.faults.load(Ordering::Relaxed) == 0)
            .then_some(3),
        Mode::LoseFirstAnswerPerObject => {
            let (path, makes) = makes_object(&request_line);
            (makes && state.lost.lock().unwrap().insert(path.to_string())).then_some(3)
        }
        Mode::LoseAnswers { one_in } => {
            let (_, makes) = makes_object(&request_line);
            (makes && state.made.fetch_add(1, Ordering::Relaxed) % one_in == 0).then_some(3)
        }
        Mode::ExpireTokenAtFirstPart => (request_line.contains("partNumber=")
            && state.faults.load(Ordering::Relaxed) == 0)
            .then_some(4),
        Mode::SlowDownAll => Some(2),
        Mode::Down => Some(0),
        Mode::FailPutsTo(part) => {
            (request_line.starts_with("PUT ") && request_line.contains(part)).then_some(2)
        }
        // Deterministic spread: requests 3, 8, 13, … of every five get a fault, in turn.
        Mode::Faults { one_in } => (n % one_in == 3 % one_in).then(|| (n / one_in) % 4),
    };
    if let Mode::Delay(d) = mode {
        std::thread::sleep(d);
    }
    let mut client = client;
    match fault {
        Some(0) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            return reset(client);
        }
        Some(1) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            return error(&mut client, 500, "Internal Server Error", "InternalError");
        }
        Some(2) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            return error(&mut client, 503, "Slow Down", "SlowDown");
        }
        Some(4) => {
            state.faults.fetch_add(1, Ordering::Relaxed);
            return error(&mut client, 400, "Bad Request", "ExpiredToken");
        }
        _ => {}
    }
    // Forward with `Connection: close`, so the answer ends where the upstream closes.
    let mut upstream = TcpStream::connect(state.upstream)?;
    let mut out = String::new();
    for line in &head[..head.len() - 1] {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes())?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    if fault == Some(3) {
        // Applied upstream, but the client never hears: like a connection lost on the way back.
        state.faults.fetch_add(1, Ordering::Relaxed);
        return reset(client);
    }
    client.write_all(&close_connection(&answer))?;
    Ok(())
}

/// The object path of a request, and whether it makes the object (a PutObject, or a
/// CompleteMultipartUpload).
fn makes_object(request_line: &str) -> (&str, bool) {
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let makes = (request_line.starts_with("PUT ") && query.is_empty())
        || (request_line.starts_with("POST ")
            && query.contains("uploadId=")
            && !query.contains("partNumber="));
    (path, makes)
}

/// Makes the answer say `Connection: close`, since this connection ends after it.
fn close_connection(answer: &[u8]) -> Vec<u8> {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut out: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    out.push_str("\r\nConnection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&answer[split + 4..]);
    bytes
}

fn error(client: &mut TcpStream, status: u16, reason: &str, code: &str) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes())
}

/// Closes with a TCP reset (SO_LINGER 0) rather than a clean FIN.
fn reset(client: TcpStream) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(client);
    Ok(())
}
