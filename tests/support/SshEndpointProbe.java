import java.net.URL;
import java.net.URLConnection;

/**
 * What jenkins-cli.jar's -ssh mode does before it speaks SSH, line for line
 * (hudson.cli.SSHCLI.sshConnection, CLI.verifyJenkinsConnection and
 * CLI.main's handling of NotTalkingToJenkinsException): read URL/login
 * through Java's default SSL context and print the X-SSH-Endpoint header.
 * tests/tls.rs runs it on a real JVM to hold the `java` stand-in in
 * tests/support/bin to what Java trusts and refuses.
 *
 * Usage: java SshEndpointProbe URL
 */
public class SshEndpointProbe {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        if (!url.endsWith("/")) {
            url += "/";
        }
        URLConnection conn = new URL(url + "login").openConnection();
        // getHeaderField swallows the IOException of a failed connection or
        // handshake: a refused certificate looks like "no Jenkins here".
        if (conn.getHeaderField("X-Hudson") == null && conn.getHeaderField("X-Jenkins") == null) {
            System.err.println("There's no Jenkins running at " + conn.getURL().toString());
            System.exit(3);
        }
        String endpoint = conn.getHeaderField("X-SSH-Endpoint");
        if (endpoint == null) {
            System.err.println("WARNING: No header 'X-SSH-Endpoint' returned by Jenkins");
            System.exit(255);
        }
        System.out.println(endpoint);
    }
}
