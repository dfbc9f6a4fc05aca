//! The login throttle: at most N failed attempts per window per client IP and per
//! account, in memory (the protection layer generalises it to shared stores).

use std::collections::HashMap;
use std::sync::Mutex;

/// Counts failures per key in fixed windows.
pub struct Throttle {
    limit: u32,
    window_secs: i64,
    counts: Mutex<HashMap<String, (i64, u32)>>,
}

impl Throttle {
    /// At most `limit` failures per `window_secs` per key.
    pub fn new(limit: u32, window_secs: i64) -> Self {
        Self {
            limit,
            window_secs,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self, now: i64) -> i64 {
        now.div_euclid(self.window_secs.max(1))
    }

    /// Seconds until `key` may try again, if it is over the limit at `now` (unix secs).
    pub fn blocked(&self, key: &str, now: i64) -> Option<i64> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window(now);
        match counts.get(key) {
            Some(&(w, n)) if w == window && n >= self.limit => {
                Some((window + 1) * self.window_secs - now)
            }
            _ => None,
        }
    }

    /// Records a failure for `key`.
    pub fn fail(&self, key: &str, now: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window(now);
        if counts.len() > 100_000 {
            counts.retain(|_, (w, _)| *w == window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
    }

    /// Forgets `key` (after a successful login).
    pub fn clear(&self, key: &str) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let t = Throttle::new(3, 60);
        for _ in 0..3 {
            assert_eq!(t.blocked("a", 100), None);
            t.fail("a", 100);
        }
        assert_eq!(t.blocked("a", 110), Some(10));
        assert_eq!(t.blocked("b", 110), None);
        assert_eq!(t.blocked("a", 120), None, "new window");
        t.fail("c", 100);
        t.clear("c");
        assert_eq!(t.blocked("c", 100), None);
    }
}
