import Foundation
import GRDB

/// A date as the store writes it: GRDB's own text, `yyyy-MM-dd HH:mm:ss.SSS` in UTC, made by arithmetic.
///
/// GRDB writes a `Date` with a `DateFormatter`, which is ICU: the first date stored (the housekeeper's first
/// prune, a few seconds after start-up) pages in ICU's code and its locale and calendar data, about 4 MiB of an
/// idle daemon's resident memory that nothing else needs. This writes the same characters (the formatter's
/// milliseconds are the instant's milliseconds since 1970 rounded to the nearest, as here), so rows written
/// before and after compare and sort alike (`StorageDateTests` holds it to GRDB's formatter). Reading stays GRDB's.
enum StorageDate {
    /// The text GRDB's `Date.databaseValue` holds for `date`.
    static func text(_ date: Date) -> String {
        // The formatter's own computation: CFDateFormatter hands ICU this double, half a millisecond added, and
        // ICU takes its floor (the nearest millisecond, halves up), in this order of operations.
        let milliseconds = Int64(((date.timeIntervalSinceReferenceDate + Date.timeIntervalBetween1970AndReferenceDate) * 1000 + 0.5).rounded(.down))
        let (days, inDay) = floorDivision(milliseconds, 86_400_000)
        let (year, month, day) = civil(daysSince1970: days)
        let hour = inDay / 3_600_000, minute = inDay / 60_000 % 60, second = inDay / 1000 % 60, millisecond = inDay % 1000
        return padded(year, 4) + "-" + padded(month, 2) + "-" + padded(day, 2) + " " + padded(hour, 2) + ":" + padded(minute, 2)
            + ":" + padded(second, 2) + "." + padded(millisecond, 3)
    }

    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let remainder = value % divisor
        return remainder < 0 ? (value / divisor - 1, remainder + divisor) : (value / divisor, remainder)
    }

    /// The proleptic Gregorian date of a day count (Howard Hinnant's `civil_from_days`).
    private static func civil(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shifted = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shifted + 2) / 5 + 1
        let month = shifted < 10 ? shifted + 3 : shifted - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func padded(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

/// A row whose `Date` columns are written by ``StorageDate`` rather than by GRDB's `DateFormatter`.
protocol StorageDated: EncodableRecord {}

extension StorageDated {
    static func databaseDateEncodingStrategy(for column: String) -> DatabaseDateEncodingStrategy {
        .custom { StorageDate.text($0) }
    }
}
