import Foundation
import OutriggerConfig
import Testing

/// Every YAML block in README.md is a config a reader may copy: each must validate as it stands. Files it
/// names (certificates, keys, CA bundles, the admin token) are made, empty but for a token, in a
/// temporary directory the block is decoded from; a fragment without `listeners` is completed with one.
@Suite("README examples")
struct ReadmeExamplesTests {
    static let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("README.md")

    static func yamlBlocks() throws -> [(line: Int, text: String)] {
        let lines = try String(contentsOf: readme, encoding: .utf8).components(separatedBy: "\n")
        var blocks: [(Int, String)] = []
        var current: (start: Int, lines: [String])?
        for (index, line) in lines.enumerated() {
            if current == nil, line == "```yaml" {
                current = (index + 2, [])
            } else if let block = current, line == "```" {
                blocks.append((block.start, block.lines.joined(separator: "\n") + "\n"))
                current = nil
            } else if current != nil {
                current!.lines.append(line)
            }
        }
        return blocks
    }

    @Test func everyYAMLBlockValidates() throws {
        let blocks = try Self.yamlBlocks()
        #expect(blocks.count >= 2, "the config reference and the controlPlane block")
        for block in blocks {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-readme-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            var text = block.text
            // Files the block names: made where it expects them (absolute paths moved under the directory).
            let pattern = try NSRegularExpression(pattern: "(certificate|privateKey|tokenFile|ca|caFile): ([^\\s,}#]+)")
            for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).reversed() {
                let range = Range(match.range(at: 2), in: text)!
                let path = String(text[range])
                let file = directory.appendingPathComponent(path.hasPrefix("/") ? String(path.dropFirst()) : path)
                try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                try "0123456789abcdef0123456789abcdef\n".write(to: file, atomically: true, encoding: .utf8)
                if path.hasPrefix("/") { text.replaceSubrange(range, with: file.path) }
            }
            if !text.contains("listeners:") {
                text += "listeners:\n  - {name: in, address: 127.0.0.1:15006, routes: [{cluster: local}]}\nclusters:\n  - {name: local, endpoints: [127.0.0.1:8080]}\n"
            }
            let file = directory.appendingPathComponent("sidecar.yaml").path
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            do {
                _ = try SidecarConfig.load(contentsOf: file)
            } catch {
                Issue.record("README.md's YAML block at line \(block.line) does not validate:\n\(error)")
            }
        }
    }
}
