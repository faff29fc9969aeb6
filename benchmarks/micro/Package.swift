// swift-tools-version: 6.1
import PackageDescription

// Microbenchmarks (ordo-one/benchmark), kept out of the root package so its build and CI do not pay
// for them. Run with `make microbench` from the repository root.
let package = Package(
    name: "outrigger-micro",
    platforms: [.macOS(.v14)],
    dependencies: [
        // Named, because a path dependency is otherwise known by its directory name (the checkout's).
        .package(name: "outrigger", path: "../.."),
        // Only the malloc interposer: the default traits would also pull the ARC runtime interposer.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        // Already dependencies of the root package; needed here for the loopback client and the logger.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    ],
    targets: [
        // Pure request-path logic: route matching, config decoding, header rewriting.
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OutriggerConfig", package: "outrigger"),
                .product(name: "OutriggerCore", package: "outrigger"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Whole requests over loopback sockets, in-process: direct to the echo server, and through the sidecar.
        .executableTarget(
            name: "LoopbackBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OutriggerConfig", package: "outrigger"),
                .product(name: "OutriggerProxy", package: "outrigger"),
                .product(name: "OutriggerEcho", package: "outrigger"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/LoopbackBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
