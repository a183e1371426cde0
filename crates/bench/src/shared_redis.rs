//! The Redis the system under test uses (`--redis-url`): what each accepted buy cost it, and
//! removing what a spawned server left in it.
//!
//! Redis reports `used_cpu_sys` and `used_cpu_user` for its whole process in seconds (`INFO
//! cpu`); the difference over the load is divided by the buys accepted in it. Anything else
//! using the same Redis at that moment is counted too, so measure on a Redis of your own.
//!
//! A spawned server keeps its sales, holds, sessions and limits under a key prefix of its own;
//! once it is stopped, [`SharedRedis::delete_prefix`] deletes them (SCAN + UNLINK), so repeated
//! runs do not pile up keys in a Redis that outlives them.

use redis::aio::MultiplexedConnection;

use crate::error::BenchError;

/// Keys asked for per SCAN step and deleted per UNLINK.
const SCAN_COUNT: usize = 1000;

fn redis_error(e: redis::RedisError) -> BenchError {
    BenchError::Redis(e.to_string())
}

/// A connection to the Redis the system under test uses.
pub struct SharedRedis {
    conn: MultiplexedConnection,
}

impl SharedRedis {
    /// Connects to `url` (`redis://host:port`).
    pub async fn connect(url: &str) -> Result<Self, BenchError> {
        let client = redis::Client::open(url).map_err(redis_error)?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(redis_error)?;
        Ok(Self { conn })
    }

    /// CPU seconds (system + user) the server has used since it started.
    pub async fn cpu_secs(&mut self) -> Result<f64, BenchError> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error)?;
        parse_cpu_secs(&info).ok_or_else(|| {
            BenchError::Redis("INFO cpu has no used_cpu_sys / used_cpu_user".to_owned())
        })
    }

    /// Deletes every key that starts with `prefix`; returns how many there were.
    pub async fn delete_prefix(&mut self, prefix: &str) -> Result<usize, BenchError> {
        let pattern = format!("{prefix}*");
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut self.conn)
                .await
                .map_err(redis_error)?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(redis_error)?;
                deleted += keys.len();
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// `used_cpu_sys + used_cpu_user` from the text of `INFO cpu`.
fn parse_cpu_secs(info: &str) -> Option<f64> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some(field("used_cpu_sys")? + field("used_cpu_user")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_system_and_user_of_the_main_process() {
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\
                    used_cpu_sys_children:9.0\r\nused_cpu_user_children:9.0\r\n\
                    used_cpu_sys_main_thread:1.0\r\n";
        assert_eq!(parse_cpu_secs(info), Some(3.75));
    }

    #[test]
    fn missing_fields_are_none() {
        assert_eq!(parse_cpu_secs("# CPU\r\nused_cpu_sys:1.0\r\n"), None);
        assert_eq!(
            parse_cpu_secs("used_cpu_sys:x\r\nused_cpu_user:1\r\n"),
            None
        );
    }
}
