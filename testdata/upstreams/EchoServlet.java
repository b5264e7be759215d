// An echo servlet on embedded Tomcat for keyhole's upstream tests.
// Usage: java -cp ... EchoServlet PORT WORKDIR
// Every request is answered with JSON of what Tomcat resolved it to: the
// servlet path of the mapping that took it (/api/v1/prod, /api/v1/dev, or
// "" for the default), the path info, the request URI and the headers.
// GET /__count tells how many other requests it has served.
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.util.Collections;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.catalina.Context;
import org.apache.catalina.Lifecycle;
import org.apache.catalina.LifecycleListener;
import org.apache.catalina.connector.Connector;
import org.apache.catalina.startup.Tomcat;
import org.apache.catalina.util.ServerInfo;

public class EchoServlet extends HttpServlet {
    private final AtomicInteger count = new AtomicInteger();

    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        StringBuilder b = new StringBuilder("{");
        if (req.getServletPath().equals("/__count")) {
            b.append("\"count\":").append(count.get());
        } else {
            count.incrementAndGet();
            b.append("\"server\":").append(q(ServerInfo.getServerInfo()))
                .append(",\"method\":").append(q(req.getMethod()))
                .append(",\"servlet_path\":").append(q(req.getServletPath()))
                .append(",\"path_info\":").append(q(req.getPathInfo()))
                .append(",\"request_uri\":").append(q(req.getRequestURI()))
                .append(",\"headers\":[");
            String sep = "";
            for (String name : Collections.list(req.getHeaderNames())) {
                for (String value : Collections.list(req.getHeaders(name))) {
                    b.append(sep).append('[').append(q(name)).append(',').append(q(value)).append(']');
                    sep = ",";
                }
            }
            b.append(']');
        }
        resp.setContentType("application/json");
        resp.setCharacterEncoding("UTF-8");
        resp.getWriter().write(b.append("}\n").toString());
    }

    // q quotes s as a JSON string, or gives null.
    static String q(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) throws Exception {
        Tomcat tomcat = new Tomcat();
        tomcat.setBaseDir(args[1]);
        Connector connector = new Connector();
        connector.setPort(Integer.parseInt(args[0]));
        connector.setProperty("address", "127.0.0.1");
        connector.setProperty("server", ServerInfo.getServerInfo()); // Tomcat sends no Server header by default
        tomcat.setConnector(connector);
        Context ctx = tomcat.addContext("", null);
        // Tomcat's own listener scans for annotations, which needs the
        // jakarta.annotation classes the Debian jars lack: only mark the
        // context configured instead.
        for (LifecycleListener l : ctx.findLifecycleListeners()) ctx.removeLifecycleListener(l);
        ctx.addLifecycleListener(e -> {
            if (e.getType().equals(Lifecycle.CONFIGURE_START_EVENT)) ctx.setConfigured(true);
        });
        Tomcat.addServlet(ctx, "echo", new EchoServlet());
        ctx.addServletMappingDecoded("/api/v1/prod/*", "echo", false);
        ctx.addServletMappingDecoded("/api/v1/dev/*", "echo", false);
        ctx.addServletMappingDecoded("/", "echo", false);
        tomcat.start();
        tomcat.getServer().await();
    }
}
