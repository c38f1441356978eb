extension Duration {
    /// This duration in seconds, fraction included: what rates, metrics and JSON figures are counted in.
    /// One conversion for all of them, instead of each splitting `components` itself.
    public var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
