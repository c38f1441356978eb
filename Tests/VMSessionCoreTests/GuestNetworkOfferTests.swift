import Testing
import VMSessionCore

/// What a host view says of its guests' network, from a hypervisor's "why not".
@Suite("Guest network offer")
struct GuestNetworkOfferTests {
    @Test("no reason is available, with no reason shown; a reason is unavailable, with that reason")
    func fromUnavailability() {
        #expect(GuestNetworkOffer(unavailability: nil) == .available)
        #expect(GuestNetworkOffer(unavailability: nil).reason == nil)
        let offer = GuestNetworkOffer(unavailability: "reached over TLS")
        #expect(!offer.available && offer.reason == "reached over TLS")
        #expect(offer == .unavailable("reached over TLS"))
    }

    @Test("an available offer carries no reason, whatever it was given")
    func availableHasNoReason() {
        #expect(GuestNetworkOffer(available: true, reason: "stale").reason == nil)
    }
}
