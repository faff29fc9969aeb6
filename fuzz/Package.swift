// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets, kept out of the root package: they build only with `-sanitize=fuzzer`. Run with `make fuzz`
// from the repository root (scripts/fuzz.sh).
let package = Package(
    name: "outrigger-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        // Named, because a path dependency is otherwise known by its directory name (the checkout's).
        .package(name: "outrigger", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.36.0"),
    ],
    targets: [
        // The downstream HTTP/1.1 request parser against NIO's llhttp decoder, on whatever bytes libFuzzer makes.
        .executableTarget(
            name: "HTTP1RequestParserFuzz",
            dependencies: [
                .product(name: "OutriggerCore", package: "outrigger"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // The HTTP/2 frame decoder (whole and cut) and the connection's state behind it, as a server (downstream) and a client (upstream).
        .executableTarget(
            name: "HTTP2FramingFuzz",
            dependencies: [
                .product(name: "OutriggerCore", package: "outrigger"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The HPACK decoder against NIOHPACK's, on a connection's blocks made of whatever bytes libFuzzer makes.
        .executableTarget(
            name: "HPACKDecoderFuzz",
            dependencies: [
                .product(name: "OutriggerCore", package: "outrigger"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ]
        ),
        // The upstream HTTP/1.1 response parser against NIO's llhttp decoder, on whatever bytes libFuzzer makes.
        .executableTarget(
            name: "HTTP1ResponseParserFuzz",
            dependencies: [
                .product(name: "OutriggerCore", package: "outrigger"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ]
)
