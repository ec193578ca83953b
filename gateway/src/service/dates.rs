//! Dates as clients write them (unix seconds, RFC 3339, or a bare `YYYY-MM-DD` day), for
//! search filters and for a photo's `created_at`.

use chrono::{DateTime, NaiveDate};

use crate::api::DateBound;
use crate::service::ServiceError;

/// Unix seconds of a bound; a bare day means its first second (`from`) or last (`to`).
pub fn unix_seconds(field: &str, bound: &DateBound, end_of_day: bool) -> Result<i64, ServiceError> {
    let text = match bound {
        DateBound::Seconds(seconds) => return Ok(*seconds),
        DateBound::Text(text) => text.trim(),
    };
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp());
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let time = if end_of_day { day.and_hms_opt(23, 59, 59) } else { day.and_hms_opt(0, 0, 0) };
        return Ok(time.expect("valid time of day").and_utc().timestamp());
    }
    Err(ServiceError::BadRequest(format!(
        "{field} must be unix seconds, an RFC 3339 timestamp or YYYY-MM-DD, got {text:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_accept_seconds_rfc3339_and_days() {
        assert_eq!(unix_seconds("date_from", &DateBound::Seconds(5), false).unwrap(), 5);
        let day = DateBound::Text("2024-01-02".into());
        assert_eq!(unix_seconds("date_from", &day, false).unwrap(), 1_704_153_600);
        assert_eq!(unix_seconds("date_to", &day, true).unwrap(), 1_704_153_600 + 86_399);
        let time = DateBound::Text("2024-01-02T00:00:10Z".into());
        assert_eq!(unix_seconds("date_from", &time, false).unwrap(), 1_704_153_610);
        let err = unix_seconds("date_to", &DateBound::Text("yesterday".into()), true).unwrap_err().to_string();
        assert!(err.contains("date_to"), "{err}");
    }
}
