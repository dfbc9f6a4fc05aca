//! The clock the node runs on: the system's, or, for tests that move time instead of
//! sleeping, the system's plus an offset read from the file `FERROBASE_TEST_CLOCK`
//! names (seconds, fractions allowed; a missing or empty file is zero). Refused in
//! production.

use std::path::PathBuf;
use std::sync::Arc;

use ferrobase_http::{Clock, SystemClock};
use ferrobase_schema::settings::Environment;

/// The system clock moved by the offset in a file.
struct OffsetClock {
    file: PathBuf,
}

impl Clock for OffsetClock {
    fn now(&self) -> time::OffsetDateTime {
        let offset = std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite())
            .unwrap_or(0.0);
        time::OffsetDateTime::now_utc() + time::Duration::seconds_f64(offset)
    }
}

/// The node's clock, from the environment.
pub fn from_env(env: Environment) -> Result<Arc<dyn Clock>, String> {
    match std::env::var_os("FERROBASE_TEST_CLOCK") {
        None => Ok(Arc::new(SystemClock)),
        Some(_) if env == Environment::Production => {
            Err("FERROBASE_TEST_CLOCK moves time for tests; it is refused in production".into())
        }
        Some(file) => Ok(Arc::new(OffsetClock { file: file.into() })),
    }
}
