// swift-tools-version: 6.1
import PackageDescription

/// Release builds drop exclusivity checks on the hot path (about 3 % of a relay's CPU in profiles), and LLVM's merging
/// of alike functions: it had merged specialisations that differ in a few constants (`IDMap`'s for two element types,
/// the HTTP/1 message sequence's) into one that takes them as arguments. Off, callgrind counted 50 fewer instructions
/// per HTTP/1.1 request and 180 fewer per h2c request, for 33 KB more code.
let hotPathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked", "-Xfrontend", "-disable-llvm-merge-functions-pass"], .when(configuration: .release))
]

let package = Package(
    name: "outrigger",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "outrigger", targets: ["outrigger"]),
        // Libraries only so the separate microbenchmark package (benchmarks/micro) can import them.
        .library(name: "OutriggerConfig", targets: ["OutriggerConfig"]),
        .library(name: "OutriggerCore", targets: ["OutriggerCore"]),
        .library(name: "OutriggerProxy", targets: ["OutriggerProxy"]),
        .library(name: "OutriggerEcho", targets: ["OutriggerEcho"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.36.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.2.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.0"),
    ],
    targets: [
        // Config: YAML → validated value types. No networking.
        .target(
            name: "OutriggerConfig",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // Core: pure logic of the request path (routing, header policy, local replies, stats, balancing).
        // Depends on NIOCore/NIOHTTP1 for their value types only; never on NIOPosix.
        .target(
            name: "OutriggerCore",
            dependencies: [
                "OutriggerConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: hotPathSettings
        ),
        // Proxy: the I/O shell — listeners, forwarding handlers, upstream pools, admin, reload.
        .target(
            name: "OutriggerProxy",
            dependencies: [
                "OutriggerCore",
                "OutriggerConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPathSettings
        ),
        // XDS: Envoy's xDS v3 messages (the subset we speak, generated from Protos/ and committed) and the one
        // place where they are mapped to and from our config. No networking.
        .target(
            name: "OutriggerXDS",
            dependencies: [
                "OutriggerConfig",
                .product(name: "Yams", package: "Yams"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ],
            exclude: ["Generated/README.md"]
        ),
        // Etcd: a client of etcd's v3 gRPC API (the subset used, generated from Protos/etcd and committed): the
        // control plane's store when its replicas share one.
        .target(
            name: "OutriggerEtcd",
            dependencies: [
                "OutriggerConfig",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ],
            exclude: ["Generated/README.md"]
        ),
        // Control: the control plane (`outrigger control`: mesh file, per-node views, the ADS server) and the
        // sidecar's ADS client, both over grpc-swift-2's HTTP/2 transport.
        .target(
            name: "OutriggerControl",
            dependencies: [
                "OutriggerXDS",
                "OutriggerEtcd",
                "OutriggerConfig",
                "OutriggerProxy",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Echo: the built-in demo/test upstream.
        .target(
            name: "OutriggerEcho",
            dependencies: [
                "OutriggerProxy",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ]
        ),
        // Bench: the load generator behind `outrigger bench` (open loop with coordinated-omission
        // correction, or closed loop), its pure scheduler and its report.
        .target(
            name: "OutriggerBench",
            dependencies: [
                "OutriggerConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: hotPathSettings
        ),
        .executableTarget(
            name: "outrigger",
            dependencies: [
                "OutriggerBench",
                "OutriggerProxy",
                "OutriggerConfig",
                "OutriggerEcho",
                "OutriggerControl",
                "OutriggerEtcd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            // Release: lld with packed relative relocations (DT_RELR, glibc ≥ 2.36). The loader then reads
            // 14 KiB of relocations at start instead of 1.7 MiB: 2.5 MiB less peak RSS under the bench load.
            // The functions a sidecar runs are laid out together, in the order scripts/order-symbols.py wrote (a name
            // no longer in the binary is skipped), and those without a symbol together after them (release-layout.ld):
            // ~10 MiB less of the binary's code resident. The executable exports no symbols (the static stdlib's link
            // arguments add --export-dynamic): 2.7 MiB of symbol tables, all resident otherwise.
            linkerSettings: [
                .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                              "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/scripts/release-symbol-order.txt",
                              "-Xlinker", "--no-warn-symbol-ordering",
                              "-Xlinker", "-T", "-Xlinker", "\(Context.packageDirectory)/scripts/release-layout.ld",
                              "-Xlinker", "--no-export-dynamic"], .when(configuration: .release))
            ]
        ),
        .testTarget(
            name: "OutriggerCoreTests",
            dependencies: [
                "OutriggerCore", "OutriggerConfig", "OutriggerBench", "OutriggerXDS", "OutriggerControl", "OutriggerEtcd",
                .product(name: "NIOEmbedded", package: "swift-nio"),
                // NIO's HPACK decoder reads what HPACKBlockEncoder writes.
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "OutriggerEndToEndTests",
            dependencies: [
                "OutriggerProxy", "OutriggerEcho", "OutriggerConfig", "OutriggerCore", "OutriggerXDS", "OutriggerControl", "OutriggerEtcd",
                // Built so the tests that drive the real process (signals, exit codes, memory) can run it.
                "outrigger",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Scripts"]
        ),
    ]
)
