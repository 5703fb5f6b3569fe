//! A sink for unit tests: no I/O, answers each kind from a script, records
//! when each attempt was made (on tokio's clock, so tests can pause it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::{EncodedBatch, PayloadKind, SendError};

/// What one attempt answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Ok,
    /// Transient, with this `Retry-After`.
    Transient(Option<std::time::Duration>),
    Permanent,
    /// This answer, after this long (a request in flight).
    Slow(std::time::Duration, Box<Answer>),
}

#[derive(Debug, Clone, Default)]
pub struct ScriptedSink {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per kind: the next answers; when empty, `always` (else `Ok`).
    script: HashMap<PayloadKind, VecDeque<Answer>>,
    always: HashMap<PayloadKind, Answer>,
    attempts: Vec<(PayloadKind, u64, Instant)>,
}

impl ScriptedSink {
    pub fn script(&self, kind: PayloadKind, answers: impl IntoIterator<Item = Answer>) {
        let mut i = self.inner.lock().unwrap();
        i.script.entry(kind).or_default().extend(answers);
    }

    /// Once the script of `kind` is used up, answer this.
    pub fn always(&self, kind: PayloadKind, a: Answer) {
        self.inner.lock().unwrap().always.insert(kind, a);
    }

    /// Every attempt: (kind, items, when).
    pub fn attempts(&self) -> Vec<(PayloadKind, u64, Instant)> {
        self.inner.lock().unwrap().attempts.clone()
    }

    pub fn attempts_of(&self, kind: PayloadKind) -> Vec<Instant> {
        self.attempts()
            .into_iter()
            .filter(|a| a.0 == kind)
            .map(|a| a.2)
            .collect()
    }

    pub async fn send(&self, b: &EncodedBatch) -> Result<(), SendError> {
        tokio::task::yield_now().await;
        let answer = {
            let mut i = self.inner.lock().unwrap();
            i.attempts.push((b.kind, b.items, Instant::now()));
            let next = i.script.get_mut(&b.kind).and_then(|s| s.pop_front());
            next.or_else(|| i.always.get(&b.kind).cloned())
                .unwrap_or(Answer::Ok)
        };
        let answer = match answer {
            Answer::Slow(d, a) => {
                tokio::time::sleep(d).await;
                *a
            }
            a => a,
        };
        match answer {
            Answer::Ok | Answer::Slow(..) => Ok(()),
            Answer::Transient(retry_after) => Err(SendError::Transient {
                reason: "scripted".into(),
                retry_after,
            }),
            Answer::Permanent => Err(SendError::Permanent {
                status: Some(400),
                reason: "scripted".into(),
            }),
        }
    }
}
