fn main() {
    eprintln!("hubcast-loadtest: scenarios arrive with the delivery-engine work");
    std::process::exit(2)
}
