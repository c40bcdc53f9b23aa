// The offers of one dealer in one DDD, from carat-catalogd (Java 17 standard library only).
// usage: java Offers.java HOST:PORT DEALER DDD [--once]   (HttpClient speaks TCP, not Unix sockets:
// HOST:PORT is the daemon's loopback listener, api.tcp_listen = "127.0.0.1:8080" in its config)
// Prints the offers in R$, then (without --once) again at each change, with a long-poll.
// Exit: 1 error, 2 no such dealer or DDD, 3 not synced yet (--once).
import java.io.*;
import java.net.URI;
import java.net.http.*;
import java.nio.charset.StandardCharsets;
import java.util.*;

public class Offers {
    static final PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

    public static void main(String[] args) throws Exception {
        boolean once = args.length == 4 && args[3].equals("--once");
        if (args.length != 3 && !once) retryOrExit(true, 1, "usage: java Offers.java HOST:PORT DEALER DDD [--once]");
        var client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        String url = "http://" + args[0] + "/v1/catalogs/normal/dealers/" + args[1] + "/ddds/" + args[2];
        for (String etag = null; ; ) {
            var req = HttpRequest.newBuilder(URI.create(etag == null ? url : url + "?wait=300"));
            if (etag != null) req.header("If-None-Match", etag); // wait up to 5 minutes for a change
            HttpResponse<String> resp;
            try {
                resp = client.send(req.build(), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
            } catch (IOException e) { // the daemon stopped or restarts: try again
                retryOrExit(once, 1, "error: " + e);
                continue;
            }
            int status = resp.statusCode();
            if (status == 200) {
                show(new Json(resp.body()).value());
                etag = resp.headers().firstValue("ETag").orElse(null);
            } else if (status != 304) { // 304: unchanged
                var error = get(new Json(resp.body()).value(), "error"); // match on the code, not the message
                String msg = "error: " + get(error, "code") + ": " + get(error, "message");
                retryOrExit(once || status != 503, status == 404 ? 2 : status == 503 ? 3 : 1, msg);
            }
            if (once) return;
        }
    }

    static void show(Object o) {
        out.printf("dealer %s, DDD %s, catalog %s%n", get(o, "dealer_code"), get(o, "ddd"), get(o, "general_hash"));
        if (Boolean.TRUE.equals(get(o, "stale")))
            out.printf("warning: stale catalog, last confirmed by Carat at %s%n", get(o, "checked_at"));
        for (var c : (List<?>) get(o, "categories")) {
            for (var r : (List<?>) get(c, "amount_ranges"))
                out.printf("%s  %s – %s%n", get(r, "amount_key"), brl(get(r, "min_amount")), brl(get(r, "max_amount")));
            for (var f : (List<?>) get(c, "fixed_amounts"))
                out.printf("%s  %s%n", get(f, "amount_key"), brl(get(f, "amount")));
        }
    }

    static Object get(Object object, String key) {
        return ((Map<?, ?>) object).get(key);
    }

    /** Integer centavos as reais: 123456 -> "R$ 1.234,56". */
    static String brl(Object centavos) {
        long c = (Long) centavos;
        return "R$ " + String.format(Locale.ROOT, "%,d", c / 100).replace(',', '.') + String.format(",%02d", c % 100);
    }

    /** Reports msg; then exits with code, or (not synced yet, no --once) waits before the next try. */
    static void retryOrExit(boolean exit, int code, String msg) throws InterruptedException {
        System.err.println(msg);
        if (exit) System.exit(code);
        Thread.sleep(5000);
    }

    /** A minimal JSON reader (the JDK has none): objects are Maps, arrays Lists, integers Longs. */
    static final class Json {
        final String s;
        int i;

        Json(String s) { this.s = s; }

        Object value() {
            char c = skip();
            if (c == '{' || c == '[') {
                var map = new LinkedHashMap<String, Object>();
                var list = new ArrayList<Object>();
                for (i++; skip() != (c == '{' ? '}' : ']'); skip(',')) {
                    if (c == '[') list.add(value());
                    else {
                        String key = (String) value();
                        skip(':');
                        map.put(key, value());
                    }
                }
                i++;
                return c == '{' ? map : list;
            }
            var b = new StringBuilder();
            if (c == '"') {
                while ((c = s.charAt(++i)) != '"') {
                    if (c == '\\') {
                        c = s.charAt(++i);
                        if (c == 'u') {
                            c = (char) Integer.parseInt(s.substring(i + 1, i + 5), 16);
                            i += 4;
                        } else if ("nrtbf".indexOf(c) >= 0) c = "\n\r\t\b\f".charAt("nrtbf".indexOf(c));
                    }
                    b.append(c);
                }
                i++;
                return b.toString();
            }
            while (i < s.length() && "{}[],: \t\r\n".indexOf(s.charAt(i)) < 0) b.append(s.charAt(i++));
            String t = b.toString();
            return switch (t) { case "true" -> true; case "false" -> false; case "null" -> null;
                default -> t.matches("-?\\d+") ? (Object) Long.parseLong(t) : (Object) Double.parseDouble(t); };
        }

        char skip() {
            while (Character.isWhitespace(s.charAt(i))) i++;
            return s.charAt(i);
        }

        void skip(char expected) {
            if (skip() == expected) i++;
        }
    }
}
