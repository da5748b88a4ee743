"""The words of the synthetic incident sample (SYNTHETIC: invented text, no real tickets or people).

Each `Problem` is one root cause: its incidents share a `problem_id` but are written in different
words (titles, symptom sentences and details are paraphrases, not templates of one sentence).
Several problems sit on the same configuration item, and one-off requests on the same items have
no problem at all: those are the near misses that make hard dissimilar pairs. Strings may use the
keys of `sample._context` in braces ({site}, {floor}, {time}, {n}, {asset}, {app}, {share}, ...).

Over 400 lines because it is data, not logic: the phrases of every problem, one literal per problem.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One root cause with the many ways users describe it; `impact` is ServiceNow's 1 (high) to 3 (low)."""

    key: str
    ci: str
    category: str
    subcategory: str
    group: str
    impact: int
    titles: tuple[str, ...]
    symptoms: tuple[str, ...]
    details: tuple[str, ...]
    fix: str


@dataclass(frozen=True)
class OneOff:
    """Requests and faults that belong to no problem (near misses for the problems on the same item)."""

    ci: str
    category: str
    subcategory: str
    group: str
    requests: tuple[tuple[str, str], ...]  # (short description, description)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split("|") if part.strip())


def problem(key: str, ci: str, category: str, subcategory: str, group: str, impact: int, titles: str,
            symptoms: str, details: str, fix: str) -> Problem:
    """A Problem from `|`-separated alternatives (one string per field keeps the catalogue readable)."""
    return Problem(key, ci, category, subcategory, group, impact, _split(titles), _split(symptoms), _split(details), fix)


def one_off(ci: str, category: str, subcategory: str, group: str, requests: str) -> OneOff:
    """A OneOff from `|`-separated `short description => description` requests."""
    pairs = tuple((short.strip(), long.strip()) for short, long in (item.split("=>", 1) for item in _split(requests)))
    return OneOff(ci, category, subcategory, group, pairs)


VPN, WIFI, OUTLOOK, TEAMS = "GlobalProtect VPN", "CORP-WLAN Wi-Fi", "Exchange Online", "Microsoft Teams"
SAP, PRINT, LAPTOP, AD = "SAP ECC Production", "PRINTSRV02 print service", "Dell Latitude 5440", "Active Directory"
FILES, ONEDRIVE, PHONE, CRM = "FILESRV01 file shares", "OneDrive for Business", "Cisco Unified CM", "Salesforce CRM"
HR, BI, MOBILE, AV, JIRA = "Workday", "Power BI Service", "Intune mobile devices", "Meeting room AV", "Jira Software"

PROBLEMS: tuple[Problem, ...] = (
    problem(
        "vpn-certificate", VPN, "Network", "VPN", "Network Operations", 1,
        "VPN not connecting | Cannot connect to GlobalProtect from home | Remote access down - certificate error"
        " | working from home, vpn keeps failing | GlobalProtect says the certificate is not valid"
        " | Unable to reach internal sites when remote",
        "GlobalProtect fails to connect and shows a certificate warning."
        " | When I try to log in to the VPN it spins for a while and then says the gateway certificate is invalid."
        " | I'm at home and can't get onto any of the internal sites, the VPN client just gives up."
        " | Remote access stopped working this morning, the globe icon in the tray stays grey."
        " | The VPN pops up a security warning about the server certificate and won't let me continue.",
        "The error says: 'Valid client certificate is required'. | Worked fine yesterday evening."
        " | Two colleagues in my team working remotely have the same issue. | Tried rebooting twice, same thing."
        " | It fails on both my home broadband and my phone hotspot.",
        "Expired intermediate certificate on the GlobalProtect gateway replaced; clients reconnect without changes.",
    ),
    problem(
        "vpn-mfa-push", VPN, "Network", "VPN", "Identity & Access Management", 2,
        "No MFA prompt when connecting to VPN | Authenticator approval never arrives | vpn login times out waiting"
        " for approval | Not getting the push notification to sign in remotely | MFA request missing on my phone",
        "I enter my password in GlobalProtect but the approval request never shows up on my phone."
        " | The VPN waits for the second factor and then times out after a minute."
        " | My authenticator app used to buzz straight away, now nothing comes through."
        " | Sign-in gets stuck at 'waiting for verification' and I can't work from home.",
        "My phone has signal and other apps get notifications. | I re-installed the Authenticator app, no change."
        " | Entering the six digit code instead doesn't help either. | It has happened every morning since {day}.",
        "Push notification service certificate for the MFA server renewed; approvals delivered again.",
    ),
    problem(
        "vpn-drops", VPN, "Network", "VPN", "Network Operations", 3,
        "VPN disconnects every few minutes | Remote connection keeps dropping | gp keeps reconnecting"
        " | Unstable VPN, calls and RDP sessions cut off | VPN session drops while working from home",
        "The VPN connects fine but drops out every five to ten minutes and reconnects on its own."
        " | Every time the tunnel drops my remote desktop session freezes and I lose what I was typing."
        " | I keep getting 'GlobalProtect reconnecting' in the corner of the screen."
        " | Large file transfers over the VPN never finish because the connection resets.",
        "My internet at home is stable, Netflix and Zoom work fine without VPN."
        " | It is worse in the afternoon. | Started after the client upgraded itself to 6.2."
        " | Colleagues on the same ISP report it too.",
        "MTU on the gateway tunnel interface lowered to 1400 to stop fragmentation; sessions stable.",
    ),
    problem(
        "wifi-radius", WIFI, "Network", "Wireless", "Network Operations", 1,
        "Can't connect to the office Wi-Fi | CORP-WLAN rejects my laptop | Wireless authentication failed"
        " | laptop won't join wifi at work | 'Can't connect to this network' on corporate wireless"
        " | Wi-Fi keeps asking for my credentials",
        "My laptop sees the corporate network but says it can't connect to this network."
        " | Since this morning the wireless keeps asking for my username and password and then refuses them."
        " | I had to plug in a network cable because the Wi-Fi will not let me on."
        " | Windows shows 'authentication failed' whenever I select CORP-WLAN.",
        "Guest Wi-Fi works on the same laptop. | The whole of floor {floor} seems affected."
        " | It worked on Friday before I left. | I forgot the network and added it again, still failing.",
        "RADIUS server certificate renewed with the missing intermediate; 802.1X authentication succeeds again.",
    ),
    problem(
        "wifi-access-point", WIFI, "Network", "Wireless", "Network Operations", 2,
        "No Wi-Fi signal in meeting rooms on floor {floor} | Weak wireless on {floor} floor east side"
        " | wifi dead zone near the kitchen | Wireless very poor in part of the {site} office"
        " | Laptops lose Wi-Fi when walking to the north wing",
        "There is basically no wireless signal in the rooms on the east side of floor {floor}."
        " | The Wi-Fi icon shows one bar and pages take forever to load in this part of the building."
        " | As soon as I walk into the meeting room my Teams call drops because the wireless disappears."
        " | Half the desks near the windows cannot connect at all since the weekend.",
        "It is fine at the other end of the floor. | The light on the ceiling unit above desk {n} is off."
        " | Facilities did some work in the ceiling last week. | About {n} people sit in that area.",
        "Failed access point AP-{floor}-07 replaced after the ceiling works unplugged its PoE cable.",
    ),
    problem(
        "wifi-dhcp", WIFI, "Network", "Wireless", "Network Operations", 2,
        "Connected to Wi-Fi but no internet | wifi says no internet, secured | Limited connectivity on office wireless"
        " | Got a 169.254 address on the wireless | Can join the wireless network but nothing loads",
        "The laptop connects to the wireless but there is no internet and Outlook stays disconnected."
        " | Windows shows 'No internet, secured' even though I'm connected to the corporate network."
        " | ipconfig shows a 169.254 address so I think it isn't getting an IP."
        " | Nothing loads in the browser while I'm on Wi-Fi, but it works on the cable.",
        "It happens mostly after 10am when the office is full. | Reconnecting sometimes works for a few minutes."
        " | Colleagues with phones on the same network have the same problem. | Restarted the laptop, same.",
        "DHCP scope for the wireless VLAN was exhausted; lease time shortened and the scope extended to a /22.",
    ),
    problem(
        "outlook-crash", OUTLOOK, "Software", "Email", "Messaging", 2,
        "Outlook crashes on startup | Outlook closes itself straight after opening | outlook not opening since update"
        " | Outlook stopped working window every time I start it | Email client keeps crashing"
        " | Can't open Outlook, it stops responding on the splash screen",
        "Outlook opens, shows the loading screen, and then closes without any message."
        " | Every time I start Outlook I get 'Microsoft Outlook has stopped working'."
        " | Outlook freezes on 'Processing' and then crashes, so I can't read any email."
        " | Since Office updated overnight my Outlook won't stay open for more than a few seconds.",
        "Starting it in safe mode (outlook.exe /safe) works. | The event log shows a crash in an add-in DLL."
        " | Office version {version} was installed yesterday. | Web mail in the browser is working fine.",
        "Faulty version of the CRM add-in disabled by policy; Outlook starts normally after the Office update.",
    ),
    problem(
        "mail-delay", OUTLOOK, "Software", "Email", "Messaging", 1,
        "External emails arriving hours late | Customers say I never got their email | Delayed incoming mail"
        " | mails from outside the company not coming through | Missing emails from clients",
        "Emails from outside the company are arriving two or three hours after they were sent."
        " | A customer sent me a quote at 9 and it only appeared in my inbox after lunch."
        " | Internal emails are instant but anything from external senders is badly delayed."
        " | Clients keep calling to ask why we haven't replied, their mails simply haven't arrived.",
        "The message header shows it waited hours at the mail gateway. | Our whole sales team is affected."
        " | Sending out to external addresses seems fine. | This is costing us orders, please treat as urgent.",
        "Inbound connector to the mail filtering service had an expired TLS certificate; queue drained after renewal.",
    ),
    problem(
        "shared-mailbox", OUTLOOK, "Software", "Email", "Messaging", 3,
        "Shared mailbox disappeared from Outlook | Can't send as the team mailbox anymore | Lost access to shared inbox"
        " | Finance mailbox no longer showing | send as permission error on shared mailbox",
        "The shared mailbox I use every day has vanished from the folder list in Outlook."
        " | When I send from the team address I get a bounce saying I don't have permission to send as this sender."
        " | My colleague can still see the shared inbox but it's gone for me."
        " | I can open the shared mailbox in the browser but not in the Outlook app.",
        "Nothing changed on my side. | The bounce mentions 'SendAsDenied'. | It went missing after the weekend."
        " | I need it to answer supplier invoices.",
        "Mailbox permissions reapplied with auto-mapping after the licence clean-up script removed them.",
    ),
    problem(
        "teams-audio", TEAMS, "Software", "Collaboration", "Collaboration Services", 2,
        "No sound in Teams calls | Others can't hear me in Teams | Microphone not detected in Teams"
        " | teams meeting audio not working | Headset doesn't work in Teams but works elsewhere",
        "In Teams calls nobody can hear me and I can't hear them either."
        " | Teams says no microphone is detected although my headset is plugged in."
        " | The audio device list in Teams settings is empty."
        " | I join meetings and everything is silent, I have to dial in from my mobile.",
        "The headset works in Windows sound settings and on YouTube. | Drivers updated automatically last night."
        " | It's the same with the laptop's built-in speakers. | I've tried two different headsets.",
        "Realtek audio driver rolled back to the previous version and the faulty update blocked.",
    ),
    problem(
        "teams-signin", TEAMS, "Software", "Collaboration", "Collaboration Services", 2,
        "Teams stuck on loading | Can't sign in to Teams | Teams keeps asking me to log in"
        " | teams shows error caa20002 | Teams white screen after login",
        "Teams shows the spinning logo and never finishes loading."
        " | I sign in, it accepts my password, and then asks me to sign in again, round and round."
        " | Teams gives error code caa20002 and tells me to try again later."
        " | I only get a blank white window when I open Teams.",
        "Teams in the browser works. | Clearing the Teams cache didn't help. | It started after I changed my password."
        " | I've restarted the PC several times.",
        "Stale token broker cache removed by a script pushed to all devices; sign-in completes.",
    ),
    problem(
        "teams-screenshare", TEAMS, "Software", "Collaboration", "Collaboration Services", 3,
        "Screen sharing shows black screen in Teams | People can't see my shared screen | Teams share not working"
        " | presentation shows black to attendees",
        "When I share my screen in Teams the others only see a black rectangle."
        " | Attendees say my screen share is frozen on the first slide."
        " | I can share a single window but not the whole desktop.",
        "It started after the graphics driver update. | It happens only on the external monitor."
        " | I have a client presentation at {time}.",
        "Hardware acceleration disabled for Teams by policy until the Intel graphics driver fix was deployed.",
    ),
    problem(
        "sap-logon", SAP, "Software", "ERP", "ERP Support", 1,
        "Cannot log on to SAP | SAP GUI logon fails with SNC error | sap not letting me in"
        " | SAP login error 'SNC processing failed' | Single sign-on to SAP broken",
        "SAP Logon gives me 'SNC processing failed' as soon as I double click the production system."
        " | I can't get into SAP at all this morning, the logon pad shows a security error."
        " | Single sign-on into SAP used to work and now it asks for a password I don't have."
        " | Every attempt to open the P01 system ends with a GSS-API error.",
        "The whole warehouse team can't post goods receipts. | The quality system Q01 still works."
        " | My SAP GUI is version 7.70. | It worked yesterday at {time}.",
        "Kerberos service principal for the SAP application server re-registered after the AD clean-up.",
    ),
    problem(
        "sap-slow", SAP, "Software", "ERP", "ERP Support", 2,
        "SAP extremely slow | Transactions timing out in SAP | sap hanging on every screen"
        " | Month-end posting takes forever | SAP screens freeze with hourglass",
        "Every transaction in SAP takes a minute or more and some time out completely."
        " | Posting invoices in MIRO hangs with the hourglass and then gives a timeout."
        " | SAP is so slow today that we can't finish the month-end close."
        " | Reports that normally run in seconds are still running after twenty minutes.",
        "It affects everyone in finance. | Worst between 9 and 11. | The status bar shows 'TIME_OUT' dumps."
        " | We have a deadline at {time} today.",
        "Long-running background job holding table locks stopped and rescheduled outside office hours.",
    ),
    problem(
        "sap-workflow", SAP, "Software", "ERP", "ERP Support", 3,
        "Purchase order approvals not arriving | PO stuck waiting for approval | Approval workflow not working in SAP"
        " | My approver never got the purchase requisition | Workflow items missing from SAP inbox",
        "Purchase orders I create stay in 'awaiting approval' and my manager never gets them."
        " | The approval work items are not showing up in the SAP business workplace inbox."
        " | Requisitions have been sitting unapproved for days and suppliers are chasing us."
        " | Nothing is arriving in the approvers' inboxes since the last release.",
        "PO number 45000{n} is one example. | Approving directly in ME29N still works."
        " | It affects all cost centres in {site}.",
        "Workflow event linkage deactivated by the transport was switched back on and stuck items restarted.",
    ),
    problem(
        "print-spooler", PRINT, "Hardware", "Printer", "Print Services", 2,
        "Print jobs stuck in the queue | Nothing prints, documents say 'spooling' | printer queue stuck"
        " | Can't print to any printer on floor {floor} | Documents sent to printer never come out",
        "I send documents to print and they just sit in the queue with status 'error - printing'."
        " | None of the printers on our floor are printing, the jobs pile up."
        " | The print queue shows dozens of jobs and none of them are moving."
        " | My document says it was sent to the printer but nothing comes out.",
        "Printing to the same printer from a colleague's laptop also fails. | The printer display says 'Ready'."
        " | I tried deleting my job and resending. | We need to print contracts for a signing at {time}.",
        "Print spooler on PRINTSRV02 restarted and a corrupt job that crashed it removed; patch applied.",
    ),
    problem(
        "scan-to-email", PRINT, "Hardware", "Printer", "Print Services", 3,
        "Scan to email not working | Scanned documents don't arrive in my inbox | MFP cannot send scans"
        " | scanner gives SMTP error | Copier won't email scans anymore",
        "When I scan on the multifunction printer the email never arrives."
        " | The copier shows 'SMTP authentication failed' after I press send."
        " | Scanning to my email address used to work, now the device says the transmission failed.",
        "Scanning to a USB stick still works. | All the devices in {site} seem affected."
        " | I need to scan signed forms for HR.",
        "SMTP relay credentials on the devices updated after the service account password rotation.",
    ),
    problem(
        "print-garbled", PRINT, "Hardware", "Printer", "Print Services", 3,
        "Printouts come out as strange symbols | Printer printing garbage characters | pages of random text"
        " | PDF prints with wrong fonts | printer spits out blank pages with a line of code",
        "When I print a PDF the page comes out full of random symbols instead of the text."
        " | The printer prints pages and pages of gibberish starting with 'PCL XL error'."
        " | Fonts on my printouts are replaced by boxes and odd characters.",
        "Word documents print fine, only PDFs are wrong. | It started after a driver update on {day}."
        " | Wasted half a ream of paper.",
        "Universal print driver rolled back to the previous version on the print server.",
    ),
    problem(
        "dock-displays", LAPTOP, "Hardware", "Laptop", "End User Computing", 2,
        "External monitors not detected through dock | Screens stay black when docked | dock not working"
        " | Second monitor no signal on docking station | WD19 dock stopped showing displays",
        "When I connect my laptop to the docking station both monitors say 'no signal'."
        " | The dock charges the laptop and the keyboard works but the screens stay black."
        " | Windows only sees the laptop screen, the external displays are not detected at all."
        " | My dual monitor setup stopped working after the laptop restarted for updates.",
        "Connecting a monitor directly with HDMI works. | The dock light is white. | It's the same on a colleague's dock."
        " | Asset tag {asset}.",
        "Dock firmware update pushed after the laptop BIOS update broke DisplayPort alt mode.",
    ),
    problem(
        "bitlocker-recovery", LAPTOP, "Hardware", "Laptop", "End User Computing", 2,
        "Laptop asking for BitLocker recovery key | Blue screen wants a recovery key at startup"
        " | bitlocker key needed every boot | Locked out of my laptop by BitLocker",
        "Every time I turn on my laptop it asks for a 48 digit BitLocker recovery key."
        " | My laptop starts on a blue screen saying enter the recovery key for this drive."
        " | I can't get into Windows because it wants a recovery key I don't have.",
        "I'm travelling and can't come to the office. | It happened right after the firmware update prompt."
        " | Asset {asset}. | Last time the service desk gave me a key but it came back the next morning.",
        "TPM measurements reset by suspending BitLocker during firmware updates; policy fixed in the update ring.",
    ),
    problem(
        "laptop-not-charging", LAPTOP, "Hardware", "Laptop", "End User Computing", 3,
        "Laptop not charging | Battery stuck at 0%, plugged in not charging | power adapter not recognised"
        " | laptop dies even when connected to power | Battery warning on new laptop",
        "The battery icon says plugged in, not charging and the laptop dies after an hour."
        " | At startup I get a warning that the AC adapter type cannot be determined."
        " | My laptop does not charge from the charger that came with it.",
        "The charger gets warm. | It charges from the dock but not the brick. | Asset {asset}, delivered last month.",
        "Affected batch of 90W adapters identified; replacements shipped to all users of the batch.",
    ),
    problem(
        "ad-lockout", AD, "Access", "Account", "Identity & Access Management", 2,
        "Account keeps getting locked | Locked out again after password change | my account locks every hour"
        " | Repeated AD lockouts | Can't log in, account locked out",
        "My account has been locked three times today and I have to call the service desk every time."
        " | Since I changed my password my account keeps locking itself a few minutes after it's unlocked."
        " | I get 'the referenced account is currently locked out' when I log on."
        " | I keep being locked out even though I'm typing the right password.",
        "I changed my password on {day}. | I also use my work email on my phone."
        " | My mapped drives were set up with my old credentials. | Colleagues who changed their password have the same.",
        "Lockout source traced to cached credentials on mobile mail and mapped drives; users guided to update them.",
    ),
    problem(
        "sspr-portal", AD, "Access", "Password", "Identity & Access Management", 2,
        "Password reset portal gives an error | Self-service password reset not working"
        " | can't reset my own password | Reset password page says something went wrong",
        "The self-service password reset page gives 'something went wrong' after I answer my security questions."
        " | I tried to reset my password myself but the verification code never comes."
        " | The reset portal accepts my new password and then says it couldn't be changed.",
        "My password expires today. | It fails from home and from the office. | Error reference SSPR_0029.",
        "Password write-back agent restarted and its service account permissions restored.",
    ),
    problem(
        "sso-loop", AD, "Access", "Single sign-on", "Identity & Access Management", 1,
        "Single sign-on loop on web apps | Keeps redirecting to the login page | can't get into any cloud app"
        " | SSO error 'SAML response is invalid' | Login page loops forever",
        "Whenever I open a cloud application it sends me to the company login page and then back again in a loop."
        " | I get 'SAML response is invalid' when logging in to the expenses tool."
        " | After I sign in, the browser bounces between two pages and never lets me in.",
        "Happens in Edge and Chrome. | It started at about {time}. | Everyone in my office has it.",
        "Token-signing certificate rolled over on the identity provider without updating the relying parties; fixed.",
    ),
    problem(
        "share-access-denied", FILES, "Storage", "File share", "Infrastructure Services", 2,
        "Access denied on department share | Can't open the finance folder anymore | lost access to {share}"
        " | shared drive says you don't have permission | Suddenly no access to team folder",
        "When I open our department share on the S: drive I get 'Access is denied'."
        " | I can see the {share} folder but every file says I need permission to open it."
        " | Since this morning the team folder on the file server refuses to open for me."
        " | Our whole team lost access to the shared drive we work from.",
        "My manager still has access. | It changed after the file server migration weekend."
        " | I need the files for a deadline at {time}. | The path is \\\\FILESRV01\\{share}.",
        "Security group mapping lost in the share migration restored; permissions re-applied to all migrated shares.",
    ),
    problem(
        "drive-mapping", FILES, "Storage", "File share", "Infrastructure Services", 3,
        "H: drive missing | Mapped network drives not there after login | my drives disappeared"
        " | network drive letters gone | S: and H: not showing in File Explorer",
        "My home drive H: is not there anymore when I log in."
        " | File Explorer doesn't show any of the network drives I normally have."
        " | The drive letters for the shared folders have vanished from This PC.",
        "I can still reach the share if I type the path. | It happens on every login since {day}."
        " | Colleagues on the new laptops have the same.",
        "Group policy drive-mapping item targeted to the wrong OU after the laptop refresh; corrected.",
    ),
    problem(
        "share-quota", FILES, "Storage", "File share", "Infrastructure Services", 2,
        "Cannot save files to shared drive | Disk full error when saving | no space on the team share"
        " | excel says there is not enough disk space | Shared folder full",
        "Saving any document to the shared drive fails with 'there is not enough space on the disk'."
        " | Excel tells me the file can't be saved because the disk is full, but my laptop has plenty of space."
        " | Nobody in our team can save to the project folder today.",
        "The share is \\\\FILESRV01\\{share}. | Deleting old files of mine didn't help. | Urgent, month-end files.",
        "Quota on the departmental volume raised and a runaway backup folder moved to archive.",
    ),
    problem(
        "onedrive-sync", ONEDRIVE, "Storage", "Cloud storage", "Collaboration Services", 3,
        "OneDrive not syncing | OneDrive stuck on processing changes | files not uploading to OneDrive"
        " | red cross on OneDrive icon | OneDrive sync pending forever",
        "OneDrive has been stuck on 'processing changes' since yesterday and nothing uploads."
        " | The OneDrive cloud icon has a red cross and my files aren't syncing."
        " | Changes I make on my laptop don't show up on the web version of OneDrive.",
        "There are about {n} files waiting. | I restarted OneDrive and the laptop. | I'm worried about losing work.",
        "Sync client update 24.x with a known upload bug rolled back on the affected ring.",
    ),
    problem(
        "known-folder-move", ONEDRIVE, "Storage", "Cloud storage", "Collaboration Services", 2,
        "Desktop files disappeared | My Documents folder is empty | all my files are gone from desktop"
        " | Files vanished after OneDrive setup | desktop icons missing after login",
        "When I logged in this morning everything on my desktop was gone."
        " | My Documents folder is empty, all my spreadsheets have disappeared."
        " | After OneDrive asked me to back up my folders, my files are no longer where they were.",
        "I'm panicking, I had a report due today. | The files might be in the cloud, I can't tell."
        " | It happened after a restart.",
        "Known Folder Move policy redirected folders before the first sync completed; files restored from the cloud copy.",
    ),
    problem(
        "phone-one-way-audio", PHONE, "Telephony", "Voice", "Unified Communications", 2,
        "One-way audio on calls | Callers can't hear me on desk phone | I can hear them but they can't hear me"
        " | Phone calls silent on one side | Audio missing on outside calls",
        "On outside calls I can hear the caller but they can't hear me at all."
        " | Customers say the line is silent when they ring our desk phones."
        " | Calls connect but there is no audio in one direction.",
        "Internal calls between desk phones are fine. | It affects the whole customer service team."
        " | Started after the firewall change on {day}.",
        "SIP inspection on the new firewall disabled; media ports opened for the voice gateway.",
    ),
    problem(
        "phone-registering", PHONE, "Telephony", "Voice", "Unified Communications", 1,
        "Desk phones show Registering | No dial tone on office phones | phones not working in {site}"
        " | all desk phones down on floor {floor} | IP phones stuck on configuring",
        "All the desk phones on our floor show 'Registering' and we have no dial tone."
        " | The phone screen keeps cycling through 'configuring IP' and never finishes."
        " | Nobody in the {site} office can make or receive calls on their desk phone.",
        "Softphone on the laptop still works. | The network switch was replaced last night."
        " | The sales line is down, customers can't reach us.",
        "Voice VLAN missing on the replacement access switch; configuration corrected and phones registered.",
    ),
    problem(
        "voicemail-email", PHONE, "Telephony", "Voicemail", "Unified Communications", 3,
        "Voicemails not arriving by email | Voicemail to email stopped | not getting voicemail notifications"
        " | missed call messages not coming through",
        "I used to get my voicemails as email attachments and now nothing arrives."
        " | The phone shows a message waiting light but no email came."
        " | Voicemail notifications stopped arriving in Outlook this week.",
        "Voicemail itself works from the handset. | Several people in my team have the same issue.",
        "Unity connection SMTP smart host updated to the new mail relay.",
    ),
    problem(
        "crm-dashboards", CRM, "Software", "CRM", "Business Applications", 3,
        "Salesforce dashboards not refreshing | CRM reports show old figures | pipeline report out of date"
        " | sales dashboard stuck on last week's data",
        "Our Salesforce pipeline dashboard still shows last week's numbers."
        " | Reports in the CRM don't include any opportunities created since Monday."
        " | The dashboards haven't refreshed and the figures don't match what sales entered.",
        "I need the numbers for the board meeting at {time}. | Refresh button does nothing.",
        "Nightly integration job failing on a renamed field; mapping corrected and data reloaded.",
    ),
    problem(
        "crm-email-logging", CRM, "Software", "CRM", "Business Applications", 3,
        "Emails not logging to Salesforce | Outlook integration for CRM not working | can't log emails to accounts"
        " | Salesforce side panel blank in Outlook",
        "The Salesforce panel in Outlook is blank so I can't log customer emails."
        " | Emails I log to opportunities don't appear in Salesforce."
        " | The CRM add-in in Outlook says 'we can't connect to Salesforce right now'.",
        "Worked until last week. | Same for the rest of the account managers.",
        "Connected app permissions for the Outlook integration re-granted after the security review.",
    ),
    problem(
        "workday-payslip", HR, "Software", "HR system", "HR Applications", 2,
        "Can't open my payslip | Payslip PDF gives an error | payslips not visible in Workday"
        " | pay statement page blank",
        "When I click my latest payslip in Workday I get an error instead of the PDF."
        " | My pay statements page is empty, last month's payslip isn't there."
        " | The payslip document won't open, it just says the file is unavailable.",
        "I need it for a mortgage application. | Older payslips open fine. | Colleagues have the same.",
        "Payslip generation batch rerun after it failed on a corrupted template.",
    ),
    problem(
        "workday-timesheet", HR, "Software", "HR system", "HR Applications", 3,
        "Can't submit timesheet | Timesheet submit button greyed out | Workday time entry error"
        " | time tracking won't save",
        "The submit button on my timesheet is greyed out so I can't send my hours."
        " | Workday gives an error when I try to enter time for this week."
        " | My hours won't save, the page says there is a validation error.",
        "Deadline for timesheets is today at {time}. | The project code I book to was changed.",
        "Time entry calculation fixed after the project code migration left invalid defaults.",
    ),
    problem(
        "bi-refresh", BI, "Database", "Reporting", "Data & Analytics", 3,
        "Power BI reports not updated | Dashboard shows yesterday's data | scheduled refresh failed"
        " | sales report numbers stale | data in reports is old",
        "All our Power BI reports still show yesterday's figures."
        " | The dataset refresh failed overnight and the dashboards are out of date."
        " | The numbers in the sales report haven't changed since the day before yesterday.",
        "The refresh history shows a gateway error. | We present these figures at {time}.",
        "On-premises data gateway service restarted after a Windows update; refresh schedule resumed.",
    ),
    problem(
        "bi-access", BI, "Database", "Reporting", "Data & Analytics", 3,
        "No access to Power BI report | Report says I need permission | lost access to workspace"
        " | can't see dashboards after migration",
        "The Power BI report I use every day now says I don't have access to it."
        " | Since the workspace move I get 'you need permission to view this report'."
        " | My dashboards have disappeared from the app.",
        "I had access until last week. | The link was shared by my manager.",
        "Audience groups re-added to the migrated workspace apps.",
    ),
    problem(
        "mobile-mail", MOBILE, "Hardware", "Mobile device", "End User Computing", 2,
        "Work email stopped on my iPhone | Outlook app not syncing on phone | no mail on mobile since update"
        " | phone says account needs attention",
        "Since I updated my iPhone the Outlook app doesn't get any new email."
        " | My phone says my work account needs attention and won't sync."
        " | Calendar and email stopped updating on my mobile.",
        "Laptop email is fine. | It's a company iPhone. | I removed and re-added the account.",
        "Conditional access rule updated to accept the new OS version; devices sync after compliance check-in.",
    ),
    problem(
        "mobile-enrol", MOBILE, "Hardware", "Mobile device", "End User Computing", 3,
        "Can't enrol new phone | Company Portal error during setup | mobile enrolment fails"
        " | phone setup stuck on management profile",
        "Company Portal fails at the last step when I try to set up my new phone."
        " | The enrolment says the device couldn't be registered."
        " | My new work phone is stuck installing the management profile.",
        "It's an Android phone from the new batch. | Error code 80180014.",
        "Device enrolment restrictions updated to allow the new device platform version.",
    ),
    problem(
        "room-display", AV, "Hardware", "Audio visual", "Facilities IT", 3,
        "Meeting room screen shows no signal | Can't present in room {floor}.{n} | TV in meeting room not working"
        " | HDMI in conference room not working",
        "The big screen in the meeting room says 'no signal' when I plug in my laptop."
        " | I can't get my laptop to display on the meeting room TV."
        " | The HDMI cable in the conference room doesn't do anything.",
        "Tried two laptops. | The room touch panel shows the input as active. | Client meeting at {time}.",
        "Failed HDMI switcher in the room replaced.",
    ),
    problem(
        "room-booking", AV, "Hardware", "Audio visual", "Facilities IT", 3,
        "Room panel shows wrong bookings | Meeting rooms double booked | room calendar not updating"
        " | booking screen outside the room is wrong",
        "The panel outside the meeting room shows it free when it's booked, so people walk in on meetings."
        " | Two teams arrived for the same room, both had it booked in Outlook."
        " | The room display hasn't picked up bookings made this week.",
        "Rooms on floor {floor} are affected. | It's getting awkward with visitors.",
        "Room mailbox calendar processing re-enabled after the resource mailbox migration.",
    ),
    problem(
        "jira-slow", JIRA, "Software", "Collaboration", "DevOps Tooling", 2,
        "Jira very slow | Jira gives 504 gateway timeout | Boards not loading in Jira"
        " | can't open tickets in jira",
        "Jira pages take over a minute to load and often end with a 504 gateway timeout."
        " | Our sprint board doesn't load at all this morning."
        " | Every click in Jira hangs and then errors.",
        "Confluence is fine. | About {n} developers affected. | Sprint planning at {time}.",
        "Database index rebuilt and an expensive automation rule disabled.",
    ),
)

SOFTWARE = ("Visio", "Power BI Desktop", "Adobe Acrobat Pro", "Python 3.12", "Notepad++", "7-Zip", "Tableau Reader",
            "MS Project", "SnagIt", "Git for Windows", "R Studio", "AutoCAD LT")
SHARES = ("Finance", "HR-Confidential", "Projects", "Marketing", "Legal", "Procurement", "Engineering", "Sales-Ops")
LISTS = ("all-staff-london", "finance-team", "project-apollo", "sales-emea", "it-announcements", "social-club")

ONE_OFFS: tuple[OneOff, ...] = (
    one_off(VPN, "Network", "VPN", "Network Operations",
            "Need VPN access for contractor => Could you please give VPN access to our new contractor who starts {start}?"
            " | VPN client missing on new laptop => I got a new laptop and GlobalProtect isn't installed on it, can you add it?"
            " | VPN on personal Mac => How do I set up the VPN on my personal Mac? Is that allowed?"),
    one_off(WIFI, "Network", "Wireless", "Network Operations",
            "Guest Wi-Fi password => We have {n} visitors tomorrow, what is the guest wireless password this week?"
            " | Wireless for training room => Can we get wireless access sorted for an external trainer {start}?"),
    one_off(OUTLOOK, "Software", "Email", "Messaging",
            "Set up out of office => How do I set up an automatic reply while I'm on holiday next week?"
            " | Add me to distribution list {dl} => Please add me to the {dl} distribution list, my manager approved."
            " | Increase mailbox size => My mailbox is almost full, can it be made bigger? I need to keep client emails."
            " | Create shared mailbox => We need a new shared mailbox for the {share} team with access for {n} people."),
    one_off(TEAMS, "Software", "Collaboration", "Collaboration Services",
            "Create a Teams channel => Can you create a private channel in our department team for the {share} project?"
            " | Add external guest to our team => We need to add a supplier contact as a guest to our Team."
            " | Teams background images => Is there a way to use the company branded backgrounds in Teams meetings?"),
    one_off(SAP, "Software", "ERP", "ERP Support",
            "New SAP role needed => I need the purchasing role in SAP to create orders, my manager approved."
            " | SAP access for new buyer => Please set up SAP access for our new buyer starting {start}."
            " | Change cost centre in SAP user profile => My cost centre changed after the reorganisation, please update"
            " my SAP profile."),
    one_off(PRINT, "Hardware", "Printer", "Print Services",
            "Printer out of toner on floor {floor} => The printer by the lifts on floor {floor} is out of toner, can someone"
            " replace it? | Paper jam on the copier => There is a paper jam in tray 2 of the big copier and I can't clear it."
            " | Add printer to my laptop => Please add the new colour printer in room {floor}.{n} to my laptop."),
    one_off(LAPTOP, "Hardware", "Laptop", "End User Computing",
            "Laptop replacement due => My laptop is over four years old and getting slow, am I due a replacement?"
            " | Broken laptop screen => I dropped my laptop and the screen is cracked in the corner. Asset {asset}."
            " | Keyboard keys sticking => Some keys on my keyboard stick and the E key doesn't always work."
            " | Request second monitor => Could I get a second monitor for my desk? I work with big spreadsheets."
            " | Laptop fan very loud => The fan on my laptop is extremely loud even when I'm only reading email."),
    one_off(AD, "Access", "Account", "Identity & Access Management",
            "New starter account => Please create an account for {person} who joins the {share} team {start}."
            " | Name change after marriage => I got married and my surname changed, can my account and email be updated?"
            " | Leaver - disable account => {person} left the company on Friday, please disable their access."
            " | Update job title => My job title in the address book is wrong, it should be Senior Analyst."),
    one_off(FILES, "Storage", "File share", "Infrastructure Services",
            "Access to {share} folder => Could I get read access to the {share} folder? My manager approved by email."
            " | Restore deleted file => I deleted a spreadsheet from the shared drive by mistake yesterday, can it be restored?"
            " | New project folder => Please create a folder for the new project on the department share with access for"
            " {n} people."),
    one_off(ONEDRIVE, "Storage", "Cloud storage", "Collaboration Services",
            "Share OneDrive folder with external => How can I share a OneDrive folder with our auditors outside the company?"
            " | How to restore previous version => How do I get back the version of a document from last Tuesday?"),
    one_off(PHONE, "Telephony", "Voice", "Unified Communications",
            "New headset for softphone => My headset cable is broken, can I get a new one for calls?"
            " | Move desk phone => I'm moving desks to floor {floor}, please move my phone extension too."
            " | Change voicemail greeting => How do I record a new voicemail greeting?"),
    one_off(CRM, "Software", "CRM", "Business Applications",
            "Salesforce licence for new account manager => Our new account manager needs a Salesforce licence from {start}."
            " | Reassign accounts to colleague => Please move all my accounts to {person} while I'm on parental leave."),
    one_off(HR, "Software", "HR system", "HR Applications",
            "Update bank details in Workday => Where do I change my bank account for salary in Workday?"
            " | Can't find holiday balance => How do I see how many holiday days I have left?"),
    one_off(BI, "Database", "Reporting", "Data & Analytics",
            "Power BI Pro licence request => I need a Power BI Pro licence to share my reports with the team."
            " | New report for regional sales => Can the data team build a report of sales by region for {site}?"),
    one_off(MOBILE, "Hardware", "Mobile device", "End User Computing",
            "New work phone => My manager approved a company phone for on-call duty, how do I order one?"
            " | Lost my company phone => I lost my work phone on the train this morning, please wipe it."
            " | Phone screen cracked => My company phone screen is cracked, can it be repaired?"),
    one_off(AV, "Hardware", "Audio visual", "Facilities IT",
            "Video conference setup for board meeting => Can someone set up the video conference for the board meeting"
            " {start} at {time}? | Projector bulb => The projector in training room {floor}.{n} is very dim, maybe the bulb?"),
    one_off("Software Center", "Software", "Install", "End User Computing",
            "Install {app} => Could you please install {app} on my laptop? My manager has approved it."
            " | Request: {app} licence => I need {app} for a project starting next week, is there a licence available?"
            " | {app} missing from Software Center => {app} is not in Software Center, can it be added for me?"),
)
