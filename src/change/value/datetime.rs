//! Postgres's date and time output (`DateStyle=ISO`) as RFC 3339 / ISO
//! 8601: a `T` between date and time, six fractional digits, UTC as `Z`,
//! and astronomical years for dates BC.

/// `2026-11-28 12:00:00.1+00` → `2026-11-28T12:00:00.100000Z`.
/// Other offsets (a session that did not pin `TimeZone=UTC`) are moved to
/// UTC. Always six fractional digits, as `committed_at` has: a fixed width
/// that strict parsers accept and that sorts as text in time order.
pub(super) fn timestamptz(text: &str) -> String {
    if text == "infinity" || text == "-infinity" {
        return text.to_owned();
    }
    let (body, bc) = split_bc(text);
    let Some(offset_at) = body.rfind(['+', '-']).filter(|&i| i > 10) else {
        return text.to_owned();
    };
    let (local, offset) = body.split_at(offset_at);
    let local = local.replacen(' ', "T", 1);
    let local = if bc { astronomical_year(&local) } else { local };
    if offset
        .trim_start_matches(['+', '-'])
        .split(':')
        .all(|part| part.bytes().all(|b| b == b'0'))
    {
        return format!("{}Z", with_micros(&local));
    }
    let Some(seconds) = offset_seconds(offset) else {
        return text.to_owned();
    };
    match chrono::NaiveDateTime::parse_from_str(&local, "%Y-%m-%dT%H:%M:%S%.f") {
        Ok(naive) => {
            let utc = naive - chrono::Duration::seconds(seconds);
            let base = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
            let micros = utc.and_utc().timestamp_subsec_micros();
            format!("{base}.{micros:06}Z")
        }
        Err(_) => text.to_owned(),
    }
}

/// `12:00:00` → `12:00:00.000000`, `12:00:00.5` → `12:00:00.500000`: the
/// microseconds Postgres keeps, at a fixed width.
fn with_micros(local: &str) -> String {
    match local.split_once('.') {
        Some((seconds, fraction)) => format!("{seconds}.{fraction:0<6}"),
        None => format!("{local}.000000"),
    }
}

/// `+05:30`, `-08`, `+05:53:28` as seconds east of UTC.
fn offset_seconds(offset: &str) -> Option<i64> {
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut seconds = 0;
    for (part, scale) in offset[1..].split(':').zip([3600, 60, 1]) {
        seconds += part.parse::<i64>().ok()? * scale;
    }
    Some(sign * seconds)
}

/// `2026-11-28 12:00:00.5` → `2026-11-28T12:00:00.500000`.
pub(super) fn timestamp(text: &str) -> String {
    if text == "infinity" || text == "-infinity" {
        return text.to_owned();
    }
    let (body, bc) = split_bc(text);
    let local = with_micros(&body.replacen(' ', "T", 1));
    if bc {
        astronomical_year(&local)
    } else {
        local
    }
}

pub(super) fn bc_to_astronomical(text: &str) -> String {
    match split_bc(text) {
        (body, true) => astronomical_year(body),
        (_, false) => text.to_owned(),
    }
}

fn split_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    }
}

/// ISO 8601 has no "BC": 1 BC is year 0000, 44 BC is -0043.
fn astronomical_year(text: &str) -> String {
    let Some((year, rest)) = text.split_once('-') else {
        return text.to_owned();
    };
    match year.parse::<i64>() {
        Ok(0) | Err(_) => text.to_owned(),
        Ok(1) => format!("0000-{rest}"),
        Ok(year) => format!("-{:04}-{rest}", year - 1),
    }
}
