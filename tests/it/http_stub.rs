//! A tiny HTTP/1.1 server on 127.0.0.1 standing in for Meta's CDN and Graph API: fixed answers by
//! path, every request recorded (method, path, body) for the test to read.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(content_type: &str, body: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn redirect(to: &str) -> Answer {
        Answer {
            status: 302,
            headers: vec![("Location".into(), to.into())],
            body: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The path with its query string.
    pub target: String,
    /// Header lines as sent, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status this stub answered.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Stub {
    pub port: u16,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    sequences: Arc<Mutex<HashMap<String, Vec<Answer>>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    delays: Arc<Mutex<HashMap<String, std::time::Duration>>>,
}

impl Stub {
    pub fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Default::default();
        let sequences: Arc<Mutex<HashMap<String, Vec<Answer>>>> = Default::default();
        let requests: Arc<Mutex<Vec<Request>>> = Default::default();
        let delays: Arc<Mutex<HashMap<String, std::time::Duration>>> = Default::default();
        let (a, q, r, d) = (
            answers.clone(),
            sequences.clone(),
            requests.clone(),
            delays.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (a, q, r, d) = (a.clone(), q.clone(), r.clone(), d.clone());
                std::thread::spawn(move || serve(stream, &a, &q, &r, &d));
            }
        });
        Stub {
            port,
            answers,
            sequences,
            requests,
            delays,
        }
    }

    /// Holds every answer for `path` back this long (a receiver that hangs); zero to stop.
    pub fn hang(&self, path: &str, delay: std::time::Duration) {
        self.delays.lock().unwrap().insert(path.to_string(), delay);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers requests for `path` (without the query string) with `answer`; `path` may start
    /// with a method (`"POST /x"`) to answer only that method.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_string(), answer);
    }

    /// Answers requests for `path` with these, one per request, in order; the last one repeats.
    pub fn sequence(&self, path: &str, answers: Vec<Answer>) {
        self.sequences
            .lock()
            .unwrap()
            .insert(path.to_string(), answers);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    stream: std::net::TcpStream,
    answers: &Mutex<HashMap<String, Answer>>,
    sequences: &Mutex<HashMap<String, Vec<Answer>>>,
    requests: &Mutex<Vec<Request>>,
    delays: &Mutex<HashMap<String, std::time::Duration>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = target.split('?').next().unwrap_or_default().to_string();
    let key = format!("{method} {path}");
    let queued = {
        let mut q = sequences.lock().unwrap();
        q.get_mut(&path).map(|list| {
            if list.len() > 1 {
                list.remove(0)
            } else {
                list[0].clone()
            }
        })
    };
    let found = queued.or_else(|| {
        let a = answers.lock().unwrap();
        a.get(&key).or_else(|| a.get(&path)).cloned()
    });
    let answer = found.unwrap_or(Answer {
        status: 404,
        headers: vec![],
        body: b"not found".to_vec(),
    });
    requests.lock().unwrap().push(Request {
        method,
        path: path.clone(),
        target: target.clone(),
        headers,
        body,
        status: answer.status,
    });
    let delay = delays.lock().unwrap().get(&path).copied();
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&answer.body);
}
