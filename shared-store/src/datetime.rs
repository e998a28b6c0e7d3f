//! Dates and times, UTC, from seconds since 1970: [`civil`] for any wording (the owner's
//! notices of failed sign-ins), and XEP-0082's `2026-12-02T05:00:00Z` ([`format()`], [`parse`]),
//! as the guard's archive fields and delay stamps (XEP-0203) use it.

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A moment in UTC, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year (proleptic Gregorian).
    pub year: i64,
    /// 1 to 12.
    pub month: i64,
    /// 1 to 31.
    pub day: i64,
    /// 0 to 23.
    pub hour: i64,
    /// 0 to 59.
    pub minute: i64,
    /// 0 to 59.
    pub second: i64,
}

/// `secs` since 1970 as a UTC date and time.
pub fn civil(secs: u64) -> Civil {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: rest / 3_600,
        minute: rest % 3_600 / 60,
        second: rest % 60,
    }
}

/// `secs` as an XEP-0082 DateTime in UTC, to the second.
pub fn format(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Reads an XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss](Z|(+|-)hh:mm)`) as whole seconds
/// since 1970 (a fraction is dropped). Times before 1970 read as 0.
pub fn parse(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not an XEP-0082 date and time (like 2026-12-02T05:00:00Z)");
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let part = b.get(from..from + len).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let sep = |at: usize, c: u8| -> Result<(), String> {
        (b.get(at) == Some(&c)).then_some(()).ok_or_else(bad)
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    sep(4, b'-')?;
    sep(7, b'-')?;
    sep(10, b'T')?;
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    sep(13, b':')?;
    sep(16, b':')?;
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let digits = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        at += digits;
    }
    let offset = match b.get(at) {
        Some(b'Z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() => {
            sep(at + 3, b':')?;
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let offset = h * 3_600 + m * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return Err(bad()),
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    Ok(u64::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_reads_back() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(1_796_187_600), "2026-12-02T05:00:00Z");
        assert_eq!(format(951_782_400), "2000-02-29T00:00:00Z");
        for secs in [0, 59, 86_399, 951_782_400, 1_796_187_600, 4_102_444_800] {
            assert_eq!(parse(&format(secs)), Ok(secs));
        }
    }

    #[test]
    fn reads_fractions_and_offsets() {
        assert_eq!(parse("2026-12-02T05:00:00.123Z"), Ok(1_796_187_600));
        assert_eq!(parse("2026-12-02T06:30:00+01:30"), Ok(1_796_187_600));
        assert_eq!(parse("2026-12-02T00:00:00-05:00"), Ok(1_796_187_600));
        assert_eq!(parse("1969-12-31T23:59:59Z"), Ok(0));
    }

    #[test]
    fn refuses_what_is_not_a_date_and_time() {
        for bad in [
            "",
            "2026-12-02",
            "2026-12-02T05:00:00",
            "2026-12-02 05:00:00Z",
            "2026-13-02T05:00:00Z",
            "2026-02-30T05:00:00Z",
            "2026-12-02T24:00:00Z",
            "2026-12-02T05:00:00.Z",
            "2026-12-02T05:00:00+0100",
            "2026-12-02T05:00:00Zjunk",
            "+026-12-02T05:00:00Z",
            "２０２６-12-02T05:00:00Z",
        ] {
            assert_eq!(
                parse(bad),
                Err(format!(
                    "{bad:?} is not an XEP-0082 date and time (like 2026-12-02T05:00:00Z)"
                )),
                "{bad}"
            );
        }
    }
}
