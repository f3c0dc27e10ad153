//! Human quantities for CPU and memory, as the CLI accepts them: `250m`, `1.5`, `64Mi`, `2Gi`.

/// CPU as millicores: `250m` → 250, `2` → 2000, `0.5` → 500.
pub fn parse_cpu_millis(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m
            .parse::<u64>()
            .map_err(|_| format!("invalid CPU quantity {s:?}: expected e.g. 250m, 1 or 1.5"));
    }
    let cores: f64 = s
        .parse()
        .map_err(|_| format!("invalid CPU quantity {s:?}: expected e.g. 250m, 1 or 1.5"))?;
    if !cores.is_finite() || cores < 0.0 {
        return Err(format!("invalid CPU quantity {s:?}: must be positive"));
    }
    let millis = (cores * 1000.0).round();
    if millis > u64::MAX as f64 {
        return Err(format!("invalid CPU quantity {s:?}: too large"));
    }
    Ok(millis as u64)
}

/// Memory as MiB: `64Mi`/`64M`/`64` → 64, `2Gi`/`2G` → 2048, `1Ti` → 1048576.
pub fn parse_memory_mb(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let err = || format!("invalid memory quantity {s:?}: expected e.g. 64Mi, 512M or 2Gi");
    let (num, mult) = if let Some(n) = s.strip_suffix("Ti").or_else(|| s.strip_suffix('T')) {
        (n, 1024 * 1024)
    } else if let Some(n) = s.strip_suffix("Gi").or_else(|| s.strip_suffix('G')) {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix("Mi").or_else(|| s.strip_suffix('M')) {
        (n, 1)
    } else {
        (s, 1)
    };
    let v: f64 = num.trim().parse().map_err(|_| err())?;
    if !v.is_finite() || v < 0.0 {
        return Err(err());
    }
    let mb = (v * mult as f64).round();
    if mb > u64::MAX as f64 {
        return Err(err());
    }
    Ok(mb as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu_millis("250m"), Ok(250));
        assert_eq!(parse_cpu_millis("1"), Ok(1000));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert!(parse_cpu_millis("abc").is_err());
        assert!(parse_cpu_millis("-1").is_err());
        assert!(parse_cpu_millis("5x").is_err());
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory_mb("64Mi"), Ok(64));
        assert_eq!(parse_memory_mb("64M"), Ok(64));
        assert_eq!(parse_memory_mb("64"), Ok(64));
        assert_eq!(parse_memory_mb("2Gi"), Ok(2048));
        assert_eq!(parse_memory_mb("0.5Gi"), Ok(512));
        assert!(parse_memory_mb("lots").is_err());
        assert!(parse_memory_mb("-3Mi").is_err());
    }
}
