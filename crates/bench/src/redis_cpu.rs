//! CPU a Redis server has used (`INFO cpu`), so a run can say what each accepted buy cost the
//! Redis it shares with the other gateways and services (`--redis-url`).
//!
//! Redis reports `used_cpu_sys` and `used_cpu_user` for its whole process in seconds; the
//! difference over the load is divided by the buys accepted in it. Anything else using the same
//! Redis at that moment is counted too, so measure on a Redis of your own.

use redis::aio::MultiplexedConnection;

use crate::error::BenchError;

/// A connection to the Redis whose CPU is measured.
pub struct RedisCpu {
    conn: MultiplexedConnection,
}

impl RedisCpu {
    /// Connects to `url` (`redis://host:port`).
    pub async fn connect(url: &str) -> Result<Self, BenchError> {
        let client = redis::Client::open(url).map_err(|e| BenchError::Redis(e.to_string()))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| BenchError::Redis(e.to_string()))?;
        Ok(Self { conn })
    }

    /// CPU seconds (system + user) the server has used since it started.
    pub async fn cpu_secs(&mut self) -> Result<f64, BenchError> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| BenchError::Redis(e.to_string()))?;
        parse_cpu_secs(&info).ok_or_else(|| {
            BenchError::Redis("INFO cpu has no used_cpu_sys / used_cpu_user".to_owned())
        })
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
