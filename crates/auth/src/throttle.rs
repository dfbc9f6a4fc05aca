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

    /// Counts an attempt and, in the same step, says whether it is over the limit (then
    /// with the seconds to wait). Counting before the work is done means a burst of
    /// concurrent attempts cannot all slip through before the first failure is recorded.
    pub fn hit(&self, key: &str, now: i64) -> Result<(), i64> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window(now);
        if counts.len() >= MAX_KEYS {
            // Memory stays bounded under a flood of distinct keys, and the flood must not
            // wipe the counts that matter: first what past windows and forgiven attempts
            // left, then keys still below the limit; a key at its limit goes last.
            let limit = self.limit;
            counts.retain(|_, (w, n)| *w == window && *n > 0);
            if counts.len() >= MAX_KEYS {
                counts.retain(|_, (_, n)| *n >= limit);
            }
            if counts.len() >= MAX_KEYS {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_and_keys_are_separate() {
        let t = Throttle::new(3, 60);
        for _ in 0..3 {
            assert_eq!(t.hit("a", 100), Ok(()));
        }
        assert_eq!(t.hit("a", 110), Err(10));
        assert_eq!(t.hit("b", 110), Ok(()));
        assert_eq!(t.hit("a", 120), Ok(()), "new window");
    }

    #[test]
    fn a_flood_of_keys_does_not_free_a_blocked_one() {
        let t = Throttle::new(3, 60);
        for _ in 0..3 {
            assert_eq!(t.hit("victim", 100), Ok(()));
        }
        assert!(t.hit("victim", 100).is_err());
        for i in 0..MAX_KEYS + 10 {
            let key = format!("flood{i}");
            let _ = t.hit(&key, 101);
            t.forgive(&key);
        }
        assert!(t.hit("victim", 102).is_err(), "still blocked");
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
