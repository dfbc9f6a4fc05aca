//! The login throttle: at most N failed attempts per window per client IP and per
//! account, in memory (the protection layer generalises it to shared stores).

use std::collections::HashMap;
use std::sync::Mutex;

/// Most keys remembered at once.
const MAX_KEYS: usize = 100_000;

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
        let _ = self.hit(key, now);
    }

    /// Counts an attempt and, in the same step, says whether it is over the limit (then
    /// with the seconds to wait). Counting before the work is done means a burst of
    /// concurrent attempts cannot all slip through before the first failure is recorded.
    pub fn hit(&self, key: &str, now: i64) -> Result<(), i64> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window(now);
        if counts.len() >= MAX_KEYS {
            counts.retain(|_, (w, _)| *w == window);
            if counts.len() >= MAX_KEYS {
                // Memory stays bounded even under a flood of distinct keys.
                counts.clear();
            }
        }
        let entry = counts.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.limit {
            return Err((window + 1) * self.window_secs - now);
        }
        entry.1 += 1;
        Ok(())
    }

    /// Takes back one counted attempt (it turned out to succeed).
    pub fn forgive(&self, key: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = counts.get_mut(key) {
            entry.1 = entry.1.saturating_sub(1);
        }
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

    #[test]
    fn hit_counts_first_and_forgive_takes_back() {
        let t = Throttle::new(2, 60);
        assert_eq!(t.hit("k", 0), Ok(()));
        assert_eq!(t.hit("k", 0), Ok(()));
        assert_eq!(t.hit("k", 0), Err(60));
        t.forgive("k");
        assert_eq!(t.hit("k", 0), Ok(()));
    }
}
