import Testing
import VMSessionCore

@Suite("The console log's bound on disk")
struct ConsoleLogBoundTests {
    let bound = ConsoleLogBound(keepBytes: 1 << 20)
    let block: UInt64 = 4096

    @Test("a log within its bound and slack is left alone")
    func withinBound() {
        #expect(bound.head(size: 1000, allocated: 4096, blockSize: block) == nil)
        #expect(bound.head(size: bound.keepBytes + bound.slackBytes, allocated: bound.keepBytes + bound.slackBytes, blockSize: block) == nil)
        // Large but already freed to the bound: nothing more to do.
        #expect(bound.head(size: 1 << 40, allocated: bound.keepBytes + block, blockSize: block) == nil)
        // Preallocated space past a small size: there is no head beyond what must stay.
        #expect(bound.head(size: bound.keepBytes, allocated: 1 << 30, blockSize: block) == nil)
        #expect(bound.head(size: bound.keepBytes + 100, allocated: 1 << 30, blockSize: block) == nil, "less than a block to free")
    }

    @Test("past its slack, the head is freed up to a block boundary, and never into the newest keepBytes")
    func everySizeKeepsTheNewest() {
        // Every size around the edges and a spread beyond, on a few block sizes.
        let keep = bound.keepBytes
        let sizes = (0..<64).map { keep + bound.slackBytes - 32 + UInt64($0) } + stride(from: keep, to: 64 << 20, by: 99_991).map { $0 }
        for blockSize: UInt64 in [512, 4096, 65536] {
            for size in sizes {
                let allocated = size  // a log written densely
                guard let head = bound.head(size: size, allocated: allocated, blockSize: blockSize) else {
                    #expect(allocated <= keep + bound.slackBytes || size - keep < blockSize, "size \(size), block \(blockSize)")
                    continue
                }
                #expect(head.lowerBound == 0)
                #expect(head.upperBound % blockSize == 0, "ends on a block")
                #expect(size - head.upperBound >= keep, "the newest keepBytes stay (size \(size))")
                #expect(size - head.upperBound < keep + blockSize, "and little more than that")
            }
        }
    }

    @Test("the slack is a quarter of the bound, at least 64 KiB")
    func slack() {
        #expect(ConsoleLogBound(keepBytes: 8 << 20).slackBytes == 2 << 20)
        #expect(ConsoleLogBound(keepBytes: 64 << 10).slackBytes == 64 << 10)
    }
}
