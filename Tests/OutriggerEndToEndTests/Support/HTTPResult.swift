import Foundation

/// A response as curl printed it with `-D -` (headers, then the body).
struct HTTPResult: Sendable {
    var statusLine: String
    var status: Int
    /// Lower-cased names; repeated fields joined with ", ".
    var headers: [String: String]
    var body: String

    /// Parses curl's `-D -` output, skipping informational (1xx) header blocks.
    init(curlOutput: String) {
        var rest = Substring(curlOutput)
        var block = Substring("")
        repeat {
            guard let end = rest.range(of: "\r\n\r\n") else {
                block = rest
                rest = ""
                break
            }
            block = rest[..<end.lowerBound]
            rest = rest[end.upperBound...]
        } while block.hasPrefix("HTTP/") && block.split(separator: " ").dropFirst().first?.hasPrefix("1") == true
        let lines = block.components(separatedBy: "\r\n")
        statusLine = lines.first ?? ""
        status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name] = headers[name].map { "\($0), \(value)" } ?? value
        }
        self.headers = headers
        body = String(rest)
    }

    /// The echo server's JSON description of the request it received.
    var echo: EchoReply? {
        try? JSONDecoder().decode(EchoReply.self, from: Data(body.utf8))
    }
}

/// What the echo upstream saw.
struct EchoReply: Decodable, Sendable {
    var server: String
    var method: String
    var path: String
    var headers: [String: String]
    var bodyBytes: Int
    var `protocol`: String
}

/// GETs (or whatever `arguments` say) through curl and parses the response.
func fetch(_ url: String, _ arguments: [String] = []) async throws -> HTTPResult {
    let result = try await curl(["-D", "-"] + arguments + [url])
    guard result.status == 0 else {
        throw CurlFailure(status: result.status, stderr: result.stderr)
    }
    return HTTPResult(curlOutput: result.stdout)
}

struct CurlFailure: Error, CustomStringConvertible {
    var status: Int32
    var stderr: String
    var description: String { "curl exited \(status): \(stderr)" }
}
